//! Fast tests of what `imgforge flash`, `seed` and `inspect` check before they write: each
//! on a small image made by the project's own disk code (a GPT, an ESP and a root with a few
//! bytes of data, a seed area with one slot) and its bmap, as the outputs stage writes them.
//! Every refusal asserts the exit code, the message naming the file, and that the target's
//! bytes are unchanged. See tests/README.md.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imgforge::artifact::{bmap, sparse, xz};
use imgforge::disk::{gpt, ids::Ids, layout};

const MIB: u64 = 1024 * 1024;
const SECRET: &str = "FLASH-CHECK-SECRET-7f3a";
/// What a target holds before a refused flash: a pattern no image has.
const OLD: u8 = 0x5a;

fn imgforge(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .args(args)
        .output()
        .expect("run imgforge")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `imgforge flash IMAGE TARGET --file-target --yes EXTRA...`
fn flash(image: &Path, target: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "flash".as_ref(),
        image.as_os_str(),
        target.as_os_str(),
        "--file-target".as_ref(),
        "--yes".as_ref(),
    ];
    args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
    imgforge(&args)
}

/// Asserts exit 1 and that stderr holds `needle`; returns stderr.
fn refused(o: &Output, needle: &str) -> String {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "exit 1 expected:\n{err}");
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    err
}

/// A small imgforge image `<name>.img` with `<name>.img.bmap` beside it; returns its path.
fn make_image(dir: &Path, name: &str) -> PathBuf {
    let lay = layout::plan(
        imgforge::profile::machine::PartitionTable::Gpt,
        2,
        imgforge::seed::SIZE,
        3 * MIB,
        2 * MIB,
    );
    let raw = dir.join(format!("{name}.raw"));
    let mut f = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&raw)
        .unwrap();
    f.set_len(lay.total).unwrap();
    let root = gpt::root_type("amd64").unwrap();
    gpt::write(&mut f, &lay, &Ids::derive(name), root, "1").unwrap();
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8 + 1).collect();
    f.write_all_at(&data, lay.esp.offset + 4096).unwrap();
    f.write_all_at(&data, lay.root_a.offset + MIB).unwrap();
    let slot = seed_area::Slot {
        name: "api-key".into(),
        description: "the key the service signs with".into(),
        service: "api".into(),
        required: true,
        generate: false,
        kind: Default::default(),
    };
    f.write_all_at(&seed_area::initial_area(&[slot]).unwrap(), lay.seed.offset)
        .unwrap();
    drop(f);
    // As the outputs stage writes them: a sparse copy, and a bmap with the seed area mapped.
    let img = dir.join(format!("{name}.img"));
    let (_, map) = sparse::copy_and_hash(&raw, &img, &[(lay.seed.offset, lay.seed.len)]).unwrap();
    std::fs::write(bmap::beside(&img), bmap::to_xml(&map)).unwrap();
    std::fs::remove_file(raw).unwrap();
    img
}

/// A file target holding the OLD pattern.
fn old_target(dir: &Path) -> PathBuf {
    let t = dir.join("card.img");
    std::fs::write(&t, vec![OLD; (16 * MIB) as usize]).unwrap();
    t
}

fn assert_untouched(target: &Path) {
    let now = std::fs::read(target).unwrap();
    assert!(
        now.len() == (16 * MIB) as usize && now.iter().all(|b| *b == OLD),
        "{} was written to",
        target.display()
    );
}

fn secrets(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("secrets.toml");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn the_image_as_its_own_target_is_refused_and_left_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "a");
    let before = std::fs::read(&img).unwrap();
    let link = dir.path().join("link.img");
    std::os::unix::fs::symlink(&img, &link).unwrap();
    for target in [&img, &link] {
        let o = flash(&img, target, &[]);
        refused(
            &o,
            &format!(
                "{} is the image {} itself: flashing it onto itself would destroy it",
                target.display(),
                img.display()
            ),
        );
        assert!(
            std::fs::read(&img).unwrap() == before,
            "the image is byte-identical"
        );
    }
    // An .img.xz written onto itself, too.
    let packed = dir.path().join("a.img.xz");
    xz::compress(&img, &packed).unwrap();
    let packed_before = std::fs::read(&packed).unwrap();
    let o = flash(&packed, &packed, &[]);
    refused(&o, &format!("{} is the image", packed.display()));
    assert!(std::fs::read(&packed).unwrap() == packed_before);
}

/// A loop device over a file; detached on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs root for a loop device (< 1 s)"]
fn a_loop_device_over_the_image_is_refused_and_the_image_left_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "a");
    let before = std::fs::read(&img).unwrap();
    let o = Command::new("losetup")
        .args(["-f", "--show", "-P"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "losetup: {}", text(&o.stderr));
    let dev = Loop(text(&o.stdout).trim().to_string());
    let o = imgforge(&[
        "flash".as_ref(),
        img.as_os_str(),
        dev.0.as_ref(),
        "--yes".as_ref(),
        "--force".as_ref(),
    ]);
    refused(
        &o,
        &format!(
            "{} is a loop device over the image {} (its backing file",
            dev.0,
            img.display()
        ),
    );
    // Its partition too (refused as the image before it is refused as a partition).
    let part = format!("{}p1", dev.0);
    if Path::new(&part).exists() {
        let o = imgforge(&[
            "flash".as_ref(),
            img.as_os_str(),
            part.as_ref(),
            "--yes".as_ref(),
            "--force".as_ref(),
        ]);
        refused(&o, &format!("{part} is a loop device over the image"));
    }
    drop(dev);
    assert!(std::fs::read(&img).unwrap() == before);
}

#[test]
fn a_source_that_is_not_a_whole_image_of_ours_is_refused_before_the_target_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "good");
    let whole = std::fs::read(&img).unwrap();
    let d = dir.path();
    let cases: Vec<(PathBuf, Vec<u8>, String)> = vec![
        (
            d.join("empty.img"),
            vec![],
            "is empty: not a disk image".into(),
        ),
        (
            d.join("six.img"),
            b"abcdef".to_vec(),
            "holds 6 bytes: not a disk image".into(),
        ),
        (
            d.join("cut.img"),
            whole[..whole.len() - 2 * MIB as usize].to_vec(),
            "truncated: its GPT says the disk has".into(),
        ),
        (
            d.join("random.img"),
            (0..4 * MIB).map(|i| (i * 7919 % 253) as u8).collect(),
            "not an imgforge image: no partition table".into(),
        ),
        (
            d.join("fake.img.xz"),
            vec![1u8; MIB as usize],
            "is named .xz but is not an xz file".into(),
        ),
    ];
    let target = old_target(d);
    for (path, bytes, why) in &cases {
        std::fs::write(path, bytes).unwrap();
        let o = flash(path, &target, &["--no-bmap"]);
        refused(&o, &format!("{}: {why}", path.display()));
        assert_untouched(&target);
    }
    // A truncated download of the .img.xz: no index at its end.
    let packed = d.join("good.img.xz");
    xz::compress(&img, &packed).unwrap();
    let bytes = std::fs::read(&packed).unwrap();
    let cut = d.join("cut.img.xz");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let o = flash(&cut, &target, &[]);
    refused(&o, &format!("{}: no xz index at its end", cut.display()));
    assert_untouched(&target);
    // A bmap for another image.
    let other = d.join("other.bmap");
    std::fs::write(
        &other,
        bmap::to_xml(&bmap::Bmap {
            image_size: 64 * MIB,
            ranges: vec![],
        }),
    )
    .unwrap();
    let o = flash(&img, &target, &["--bmap", other.to_str().unwrap()]);
    refused(
        &o,
        &format!(
            "{} describes a {}-byte image, but {} has {} bytes",
            other.display(),
            64 * MIB,
            img.display(),
            whole.len()
        ),
    );
    assert_untouched(&target);
    // A refused flash does not create a missing target either.
    let missing = d.join("new-card.img");
    let o = flash(&cases[0].0, &missing, &[]);
    refused(&o, "is empty");
    assert!(!missing.exists());
}

#[test]
fn secrets_that_do_not_fit_or_name_no_slot_are_refused_before_the_target_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "a");
    let target = old_target(dir.path());
    let big = secrets(
        dir.path(),
        &format!("api-key = \"{}\"\n", "x".repeat(MIB as usize)),
    );
    let o = flash(&img, &target, &["--secrets", big.to_str().unwrap()]);
    refused(
        &o,
        &format!(
            "{}: the secrets are larger than the seed area's 960 KiB",
            big.display()
        ),
    );
    assert_untouched(&target);
    // An .img.xz's slots come from its own seed area (decoded), not from a manifest.
    let packed = dir.path().join("a.img.xz");
    xz::compress(&img, &packed).unwrap();
    let typo = secrets(dir.path(), &format!("api-kye = \"{SECRET}\"\n"));
    let o = flash(&packed, &target, &["--secrets", typo.to_str().unwrap()]);
    let err = refused(
        &o,
        &format!(
            "{}:1:1: key `api-kye`: the image has no slot of this name (slots: api-key)",
            typo.display()
        ),
    );
    assert!(!err.contains(SECRET), "never a value: {err}");
    assert_untouched(&target);
}

#[test]
fn a_seeded_image_flashes_by_its_rewritten_bmap_and_an_old_bmap_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "a");
    let map_path = bmap::beside(&img);
    let built_map = std::fs::read(&map_path).unwrap();
    let s = secrets(dir.path(), &format!("api-key = \"{SECRET}\"\n"));
    let o = imgforge(&[
        "seed".as_ref(),
        img.as_os_str(),
        "--secrets".as_ref(),
        s.as_os_str(),
    ]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{} now describes the seeded image",
            map_path.display()
        )),
        "{err}"
    );
    assert!(std::fs::read(&map_path).unwrap() != built_map);

    let target = dir.path().join("card.img");
    let o = flash(&img, &target, &[]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("mapped by"), "{err}");
    let image = std::fs::read(&img).unwrap();
    assert!(
        std::fs::read(&target).unwrap() == image,
        "the card holds the seeded image"
    );
    assert!(image.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));

    // A bmap written before the image was seeded (as an older imgforge left it).
    std::fs::write(&map_path, &built_map).unwrap();
    let target = old_target(dir.path());
    let o = flash(&img, &target, &[]);
    let err = refused(
        &o,
        &format!(
            "{} was seeded after {} was written, so the bmap's checksum of its seed area",
            img.display(),
            map_path.display(),
        ),
    );
    assert!(
        err.contains(&format!(
            "Run `imgforge seed {} --secrets FILE` again (it rewrites the bmap beside the \
             image), or flash with --no-bmap; nothing was written",
            img.display()
        )),
        "{err}"
    );
    assert_untouched(&target);
    let o = flash(&img, &target, &["--no-bmap"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(std::fs::read(&target).unwrap()[..image.len()] == image[..]);
}

#[test]
fn an_xz_image_flashes_in_process_without_the_xz_program() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "a");
    let packed = dir.path().join("a.img.xz");
    xz::compress(&img, &packed).unwrap();
    let target = dir.path().join("card.img");
    // No PATH: nothing to shell out to.
    let o = Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .env("PATH", dir.path().join("no-tools"))
        .arg("flash")
        .arg(&packed)
        .arg(&target)
        .args(["--file-target", "--yes"])
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("mapped by {}", bmap::beside(&img).display())),
        "the bmap beside the .img.xz is used:\n{err}"
    );
    assert!(std::fs::read(&target).unwrap() == std::fs::read(&img).unwrap());
}

#[test]
fn seed_and_inspect_refuse_what_is_not_an_image_of_ours_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = secrets(dir.path(), &format!("api-key = \"{SECRET}\"\n"));
    let six = dir.path().join("six.img");
    std::fs::write(&six, b"abcdef").unwrap();
    let zeros = dir.path().join("zeros.img");
    std::fs::write(&zeros, vec![0u8; 4 * MIB as usize]).unwrap();
    for (path, why) in [
        (&six, "holds 6 bytes: not a disk image"),
        (&zeros, "not an imgforge image: no partition table"),
    ] {
        let before = std::fs::read(path).unwrap();
        let o = imgforge(&[
            "seed".as_ref(),
            path.as_os_str(),
            "--secrets".as_ref(),
            s.as_os_str(),
        ]);
        refused(&o, &format!("{}: {why}", path.display()));
        assert!(std::fs::read(path).unwrap() == before, "seed wrote nothing");
        let o = imgforge(&["inspect".as_ref(), path.as_os_str()]);
        refused(&o, &format!("{}: {why}", path.display()));
        assert!(o.stdout.is_empty(), "no partial report");
    }
    // An .img.xz cannot be seeded in place.
    let img = make_image(dir.path(), "a");
    let packed = dir.path().join("a.img.xz");
    xz::compress(&img, &packed).unwrap();
    let o = imgforge(&[
        "seed".as_ref(),
        packed.as_os_str(),
        "--secrets".as_ref(),
        s.as_os_str(),
    ]);
    refused(
        &o,
        &format!(
            "{} is compressed: `imgforge seed` writes into a raw .img",
            packed.display()
        ),
    );
}

#[test]
fn inspect_json_reports_table_partitions_and_seed_area_of_img_and_img_xz() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "a");
    let packed = dir.path().join("a.img.xz");
    xz::compress(&img, &packed).unwrap();
    for (path, format) in [(&img, "raw"), (&packed, "xz")] {
        let o = imgforge(&["inspect".as_ref(), path.as_os_str(), "--json".as_ref()]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["format"], format);
        assert_eq!(v["size"], std::fs::metadata(&img).unwrap().len());
        assert_eq!(v["table"]["kind"], "gpt");
        assert_eq!(v["table"]["id"], Ids::derive("a").disk_guid.to_string());
        let parts = v["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[1]["name"], "imgforge-seed");
        assert_eq!(parts[1]["content"]["kind"], "seed-area");
        assert_eq!(parts[1]["content"]["slots"], serde_json::json!(["api-key"]));
        assert_eq!(parts[1]["content"]["seeded"], serde_json::Value::Null);
        // Both root slots, with the version slot A's name carries and B empty.
        assert_eq!(
            v["slots"],
            serde_json::json!([
                {"slot": "A", "partition": 3, "state": "version", "version": "1"},
                {"slot": "B", "partition": 4, "state": "empty"},
            ])
        );
    }
}
