//! Generated files that depend on the plan rather than on overlays: the role's systemd
//! units and their enablement links, imgforge's own units, and the worker's node config.

use crate::disk::ids::Ids;
use std::collections::BTreeSet;

use crate::plan::Plan;
use crate::profile::{Database, Job, Service, Slot};

/// Where the worker keeps each slot's value on the node (see crates/worker/src/secrets.rs).
const SECRETS_DIR: &str = "/var/lib/imgforge/secrets";
/// Where pg-dump jobs keep their dumps, one folder per database.
const BACKUP_DIR: &str = "/var/lib/imgforge/backups";
/// The node's SSH host keys, on the data partition (the root slot is read-only and the
/// same on every node).
const SSH_KEY_DIR: &str = "/var/lib/imgforge/ssh";
/// Per-user files of the site's admin SSH keys (sshd's `AuthorizedKeysFile ... %u`).
const ADMIN_KEYS_DIR: &str = "/etc/ssh/imgforge-authorized-keys";
const SSH_KEY_TYPES: &[&str] = &["ed25519", "ecdsa", "rsa"];
/// The node's own self-signed certificate, and the links Debian's configurations (e.g.
/// PostgreSQL's ssl_cert_file) follow to it.
const SNAKEOIL_KEY: &str = "/var/lib/imgforge/ssl/ssl-cert-snakeoil.key";
const SNAKEOIL_CERT: &str = "/var/lib/imgforge/ssl/ssl-cert-snakeoil.pem";
const SNAKEOIL_KEY_LINK: &str = "/etc/ssl/private/ssl-cert-snakeoil.key";
const SNAKEOIL_CERT_LINK: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
/// The data partition by its filesystem label (the same for every version a disk runs).
const DATA_DEVICE: &str = "/dev/disk/by-label/imgforge-data";

/// A file or link compose adds to the root.
#[derive(Debug, Clone, PartialEq)]
pub enum Generated {
    File {
        path: String,
        content: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

const UNIT_DIR: &str = "etc/systemd/system";

/// Everything compose generates for `plan`, in a stable order. `installed` are the Debian
/// packages in the base root (some units exist only for a package's files).
/// `ids`: the image's identifiers, which name the seed area's and root's devices.
pub fn generate(plan: &Plan, installed: &BTreeSet<String>, ids: &Ids) -> Vec<Generated> {
    let seed_device = ids.seed_device(plan.partition_table.as_str());
    let mut out = Vec::new();
    for svc in &plan.services {
        // The slots it reads: those declared for it, and those its environment names.
        let named = svc
            .env
            .values()
            .flat_map(|v| crate::plan::env_slots(v))
            .collect::<BTreeSet<_>>();
        let slots: Vec<&Slot> = plan
            .slots
            .iter()
            .filter(|s| s.service == *svc.name || named.contains(s.name.as_str()))
            .collect();
        add_unit(
            &mut out,
            &format!("{}.service", svc.name),
            service_unit(svc, &slots),
            "multi-user.target",
        );
        if !svc.env.is_empty() {
            out.push(Generated::File {
                path: env_file(&svc.name).trim_start_matches('/').to_string(),
                content: env_text(svc).into_bytes(),
                mode: 0o644,
            });
        }
    }
    out.push(Generated::File {
        path: "etc/nftables.conf".into(),
        content: plan.firewall.clone().into_bytes(),
        mode: 0o755,
    });
    // Debian's nftables.service loads /etc/nftables.conf before the network is up.
    out.push(Generated::Symlink {
        path: format!("{UNIT_DIR}/sysinit.target.wants/nftables.service"),
        target: "/usr/lib/systemd/system/nftables.service".into(),
    });
    if let Some(cfg) = &plan.gateway_config {
        out.push(Generated::File {
            path: crate::site::gateway_toml::PATH
                .trim_start_matches('/')
                .into(),
            content: cfg.clone().into_bytes(),
            mode: 0o644,
        });
    }
    for db in &plan.databases {
        add_unit(
            &mut out,
            &pg_init_name(&db.name),
            pg_init_unit(db),
            "multi-user.target",
        );
    }
    for job in &plan.jobs {
        let has_init = plan
            .databases
            .iter()
            .any(|d| d.name == job.pg_dump.database);
        let name = job_name(job);
        if job.at_boot {
            add_unit(
                &mut out,
                &format!("{name}.service"),
                job_unit(job, has_init),
                "multi-user.target",
            );
        } else {
            out.push(Generated::File {
                path: format!("{UNIT_DIR}/{name}.service"),
                content: job_unit(job, has_init).into_bytes(),
                mode: 0o644,
            });
        }
        add_unit(
            &mut out,
            &format!("{name}.timer"),
            job_timer(job),
            "timers.target",
        );
    }
    add_unit(
        &mut out,
        "imgforge-firstboot.service",
        firstboot_unit(&seed_device),
        "multi-user.target",
    );
    if plan.partition_table == crate::profile::machine::PartitionTable::Mbr {
        add_unit(
            &mut out,
            "imgforge-growroot.service",
            growroot_unit(DATA_DEVICE),
            "local-fs.target",
        );
    }
    add_unit(
        &mut out,
        "imgforge-var.service",
        VAR_UNIT.to_string(),
        "local-fs.target",
    );
    add_unit(
        &mut out,
        "imgforge-machine-id.service",
        MACHINE_ID_UNIT.to_string(),
        "sysinit.target",
    );
    out.push(Generated::File {
        path: seed_area::version::PATH.trim_start_matches('/').into(),
        content: format!("{}\n", plan.version).into_bytes(),
        mode: 0o644,
    });
    // The root is read-only: the node's own SSH host keys live on the data partition,
    // where sshd's HostKey lines point.
    out.push(Generated::File {
        path: "etc/ssh/sshd_config.d/imgforge-host-keys.conf".into(),
        content: sshd_host_keys().into_bytes(),
        mode: 0o644,
    });
    if !plan.host.admin_ssh_keys.is_empty() {
        // The site's admins log in as root with their keys (Debian's sshd allows root by key
        // only). /root is in the read-only slot, so the keys live beside sshd's config, and
        // each version carries the site's list as it was built.
        let keys: String = plan
            .host
            .admin_ssh_keys
            .iter()
            .map(|k| format!("{k}\n"))
            .collect();
        out.push(Generated::File {
            path: format!("{}/root", ADMIN_KEYS_DIR.trim_start_matches('/')),
            content: format!("# Generated by imgforge from the site's admin-ssh-keys.\n{keys}")
                .into_bytes(),
            mode: 0o644,
        });
        out.push(Generated::File {
            path: "etc/ssh/sshd_config.d/imgforge-admin-keys.conf".into(),
            content: format!(
                "# Generated by imgforge: the site's admin keys, beside each user's own.\n\
                 AuthorizedKeysFile .ssh/authorized_keys {ADMIN_KEYS_DIR}/%u\n"
            )
            .into_bytes(),
            mode: 0o644,
        });
    }
    let card = plan.boot == crate::profile::machine::BootMethod::RaspiFirmware;
    let backups: Vec<String> = plan
        .jobs
        .iter()
        .map(|j| format!("{}.service", job_name(j)))
        .collect();
    match &plan.host.updates {
        Some(u) if !card => {
            // The role's readiness decides whether a new version is kept (stage/updates.rs).
            let ready = READY_UNIT
                .replace(
                    "After=multi-user.target\n",
                    &format!(
                        "After=multi-user.target\n{}",
                        super::updates::READY_GATES_BOOT_COMPLETE
                    ),
                )
                .replace(
                    "WantedBy=multi-user.target\n",
                    &format!(
                        "WantedBy=multi-user.target\nRequiredBy={}\n",
                        super::updates::READY_REQUIRED_BY
                    ),
                );
            add_unit(
                &mut out,
                "imgforge-ready.service",
                ready,
                "multi-user.target",
            );
            out.push(Generated::Symlink {
                path: format!(
                    "{UNIT_DIR}/{}.requires/imgforge-ready.service",
                    super::updates::READY_REQUIRED_BY
                ),
                target: format!("/{UNIT_DIR}/imgforge-ready.service"),
            });
            out.extend(super::updates::generate(plan, u, &backups));
        }
        _ if card => {
            // A card's readiness keeps or leaves a slot on trial (stage/card_units.rs); a
            // host with `updates` also gets the card's update engine.
            let ready = READY_UNIT.replace(
                "After=multi-user.target\n",
                &format!(
                    "After=multi-user.target\n{}",
                    super::card_units::READY_DECIDES_TRIAL
                ),
            );
            add_unit(&mut out, "imgforge-ready.service", ready, "multi-user.target");
            out.extend(super::card_units::generate());
            if let Some(u) = &plan.host.updates {
                out.extend(super::updates::generate_card(plan, u, &backups));
            }
        }
        _ => add_unit(
            &mut out,
            "imgforge-ready.service",
            READY_UNIT.to_string(),
            "multi-user.target",
        ),
    }
    add_unit(
        &mut out,
        "imgforge-ssh-keygen.service",
        ssh_keygen_unit(),
        "multi-user.target",
    );
    if installed.contains("ssl-cert") {
        add_unit(
            &mut out,
            "imgforge-snakeoil.service",
            snakeoil_unit(),
            "sysinit.target",
        );
        // Debian's configurations (PostgreSQL's ssl_cert_file) name these paths in the
        // read-only root: they lead to the node's own files on the data partition.
        for (link, target) in [
            (SNAKEOIL_KEY_LINK, SNAKEOIL_KEY),
            (SNAKEOIL_CERT_LINK, SNAKEOIL_CERT),
        ] {
            out.push(Generated::Symlink {
                path: link.trim_start_matches('/').into(),
                target: target.into(),
            });
        }
    }
    out.push(Generated::File {
        path: "etc/imgforge/node.toml".into(),
        content: node_config(plan).into_bytes(),
        mode: 0o644,
    });
    out
}

fn add_unit(out: &mut Vec<Generated>, name: &str, text: String, wanted_by: &str) {
    out.push(Generated::File {
        path: format!("{UNIT_DIR}/{name}"),
        content: text.into_bytes(),
        mode: 0o644,
    });
    // What `systemctl enable` would make for WantedBy=.
    out.push(Generated::Symlink {
        path: format!("{UNIT_DIR}/{wanted_by}.wants/{name}"),
        target: format!("/{UNIT_DIR}/{name}"),
    });
}

/// Quotes one word for a unit's ExecStart= (systemd.syntax(7) quoting).
fn exec_word(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=,@+".contains(c))
    {
        w.to_string()
    } else {
        // systemd expands $VAR and %-specifiers even inside quotes: double them.
        let escaped = w
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "$$")
            .replace('%', "%%");
        format!("\"{escaped}\"")
    }
}

fn secret_path(slot: &str) -> String {
    format!("{SECRETS_DIR}/{slot}")
}

/// Where a service's environment is written; it holds no secret (see `env_text`).
fn env_file(service: &str) -> String {
    format!("/etc/imgforge/env/{service}.env")
}

/// `KEY=VALUE` lines, sorted. `${slot:NAME}` stays as written: `worker exec` replaces it
/// with the credential when the service starts.
fn env_text(svc: &Service) -> String {
    let mut t = format!(
        "# Generated by imgforge: environment of {}.service.\n",
        svc.name
    );
    for (k, v) in &svc.env {
        t.push_str(&format!("{k}={v}\n"));
    }
    t
}

fn service_unit(svc: &Service, slots: &[&Slot]) -> String {
    let mut words: Vec<String> = Vec::new();
    if !svc.env.is_empty() {
        // The worker reads the env file, fills in the slots from $CREDENTIALS_DIRECTORY
        // and execs the command: the secret exists only in the process's environment.
        words.extend([
            "/usr/local/bin/worker".into(),
            "exec".into(),
            "--env-file".into(),
            env_file(&svc.name),
            "--".into(),
        ]);
    }
    words.extend(svc.exec.iter().map(|w| w.to_string()));
    let exec: Vec<String> = words.iter().map(|w| exec_word(w)).collect();
    let user = svc.user.as_ref().map_or(svc.name.as_str(), |u| u.as_str());
    let mut app = String::new();
    if let Some(a) = &svc.app {
        app.push_str(&format!(
            "WorkingDirectory=/opt/{a}\n\
             Environment=PATH=/opt/{a}/venv/bin:/usr/local/bin:/usr/bin:/bin\n\
             Environment=VIRTUAL_ENV=/opt/{a}/venv\n\
             Environment=PYTHONDONTWRITEBYTECODE=1\n"
        ));
    }
    if let Some(d) = &svc.state_dir {
        // The dynamic user's only writable place (ProtectSystem=strict), kept across
        // restarts and shared by the services of the same user; HOME points there for
        // tools that keep files in it.
        app.push_str(&format!(
            "StateDirectory={d}\nEnvironment=HOME=/var/lib/{d}\n"
        ));
    }
    let caps = svc.capabilities.join(" ");
    let mut after = svc.after.join(" ");
    let mut deps = String::new();
    if !svc.after.is_empty() {
        deps.push_str(&format!("Wants={after}\n"));
    }
    let mut creds = String::new();
    if !slots.is_empty() {
        // First boot places the secrets; a required one still missing keeps the service
        // from starting at all (the worker's ready check names the slot).
        after = format!("imgforge-firstboot.service {after}");
        deps.push_str("Wants=imgforge-firstboot.service\n");
        for slot in slots {
            if slot.required && !slot.generate {
                deps.push_str(&format!(
                    "ConditionPathExists={}\n",
                    secret_path(&slot.name)
                ));
            }
            creds.push_str(&format!(
                "LoadCredential={}:{}\n",
                slot.name,
                secret_path(&slot.name)
            ));
        }
    }
    let mut s = format!(
        "# Generated by imgforge from the role profile.\n\
         [Unit]\n\
         Description={desc}\n\
         After=network.target {after}\n\
         {deps}\
         # A service that fails 5 times in a minute is left failed, so the worker reports\n\
         # it at once instead of watching it restart forever.\n\
         StartLimitIntervalSec=60\n\
         StartLimitBurst=5\n\
         \n\
         [Service]\n\
         ExecStart={exec}\n\
         Restart=always\n\
         RestartSec=2\n\
         User={user}\n\
         DynamicUser=yes\n\
         {app}\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         PrivateDevices=yes\n\
         ProtectKernelTunables=yes\n\
         ProtectKernelModules=yes\n\
         ProtectControlGroups=yes\n\
         RestrictSUIDSGID=yes\n\
         LockPersonality=yes\n",
        desc = svc.description,
        exec = exec.join(" "),
        after = after.trim_end(),
        user = user,
        app = app,
    );
    // Secrets reach the service's dynamic user as systemd credentials, in
    // $CREDENTIALS_DIRECTORY/<slot>, never through its environment or a shared file.
    s.push_str(&creds);
    // Without capabilities the bounding set is empty: the service can gain none.
    s.push_str(&format!("CapabilityBoundingSet={caps}\n"));
    if !caps.is_empty() {
        s.push_str(&format!("AmbientCapabilities={caps}\n"));
    }
    if svc.name == "gateway" {
        // The internet's clients each hold a descriptor, and each proxied request one
        // more to its upstream: the default soft limit of 1024 would be reached by a few
        // hundred slow clients. The gateway's max-connections (16384) stays under half.
        s.push_str("LimitNOFILE=65536\n");
    }
    s.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    s
}

pub fn pg_init_name(database: &str) -> String {
    format!("imgforge-pg-init-{database}.service")
}

/// Creates the database and its owner (password from the slot) once PostgreSQL is up.
fn pg_init_unit(db: &Database) -> String {
    format!(
        "# Generated by imgforge: database {name}, owned by {owner}, password from the slot {slot}.\n\
         [Unit]\n\
         Description=imgforge: PostgreSQL database {name}\n\
         Requires=postgresql.service\n\
         Wants=imgforge-firstboot.service\n\
         After=postgresql.service imgforge-firstboot.service\n\
         ConditionPathExists={path}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         User=postgres\n\
         LoadCredential={slot}:{path}\n\
         ExecStart=/usr/local/bin/worker pg-init --database {name} --owner {owner} --password-credential {slot}\n\
         StandardOutput=journal+console\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        name = db.name,
        owner = db.owner,
        slot = db.password_slot,
        path = secret_path(&db.password_slot),
    )
}

pub fn job_name(job: &Job) -> String {
    format!("imgforge-job-{}", job.name)
}

/// A pg-dump job, run as the postgres user (peer authentication) into a folder systemd
/// creates and owns for it.
fn job_unit(job: &Job, after_init: bool) -> String {
    let d = &job.pg_dump;
    let init = if after_init {
        format!(" {}", pg_init_name(&d.database))
    } else {
        String::new()
    };
    format!(
        "# Generated by imgforge from the role's [[job]] `{name}`.\n\
         [Unit]\n\
         Description={desc}\n\
         Requires=postgresql.service\n\
         After=postgresql.service{init}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         User=postgres\n\
         StateDirectory=imgforge/backups/{db}\n\
         StateDirectoryMode=0700\n\
         ExecStart=/usr/local/bin/worker backup --database {db} --dir {dir}/{db} --keep-daily {kd} --keep-weekly {kw}\n\
         StandardOutput=journal+console\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n{install}",
        name = job.name,
        desc = job.description,
        db = d.database,
        dir = BACKUP_DIR,
        kd = d.keep_daily,
        kw = d.keep_weekly,
        install = if job.at_boot { "\n[Install]\nWantedBy=multi-user.target\n" } else { "" },
    )
}

fn job_timer(job: &Job) -> String {
    format!(
        "# Generated by imgforge from the role's [[job]] `{name}`.\n\
         [Unit]\n\
         Description=Schedule: {desc}\n\
         \n\
         [Timer]\n\
         OnCalendar={schedule}\n\
         # A run missed while the node was off happens at the next boot.\n\
         Persistent=true\n\
         Unit={unit}.service\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n",
        name = job.name,
        desc = job.description,
        schedule = job.schedule,
        unit = job_name(job),
    )
}

/// Places seeded secrets and generates the rest, before the role's services start. Runs
/// at each boot until it has completed (a card first booted unseeded can be seeded later).
fn firstboot_unit(seed_device: &str) -> String {
    let dev = device_unit(seed_device);
    format!(
        "\
# Generated by imgforge: secrets from the seed area, generated ones, then the area wiped.
[Unit]
Description=imgforge first boot: secrets from the seed area
Wants={dev}
After={dev} local-fs.target
ConditionPathExists=!/var/lib/imgforge/firstboot.done

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/bin/worker firstboot --device {seed_device}
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"
    )
}

/// Grows the data partition of an MBR card to the card's end before systemd-growfs grows
/// its filesystem (systemd-repart, which does this on GPT disks, needs a GPT).
fn growroot_unit(data_device: &str) -> String {
    let dev = device_unit(data_device);
    format!(
        "\
# Generated by imgforge: the data partition fills the card (MBR), then its ext4 follows.
[Unit]
Description=imgforge: grow the data partition to the end of the card
DefaultDependencies=no
After={dev}
Before=systemd-growfs@var.service local-fs.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/bin/worker grow-root --partition {data_device}
StandardOutput=journal+console

[Install]
WantedBy=local-fs.target
"
    )
}

/// The .device unit systemd makes for a device node (`systemd-escape --path --suffix=device`).
fn device_unit(path: &str) -> String {
    let mut out = String::new();
    for (i, b) in path.trim_start_matches('/').bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out + ".device"
}

/// Runs the worker's readiness checks once the system is up and reports on the console.
const READY_UNIT: &str = "\
# Generated by imgforge: reports IMGFORGE-READY or IMGFORGE-FAILED on the console.
[Unit]
Description=imgforge readiness report
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/bin/worker ready
StandardOutput=journal
StandardError=journal
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
";

/// The image carries no SSH host keys (each node must have its own): made on first boot.
fn ssh_keygen_unit() -> String {
    // Made in a folder beside the real one and renamed into place once all are written and
    // synced: a power cut while they are made (an RSA key takes seconds on a Pi) leaves no
    // folder, and the next boot makes them all again, never an empty key sshd cannot load.
    let new = format!("{SSH_KEY_DIR}.new");
    let keys: Vec<String> = SSH_KEY_TYPES
        .iter()
        .map(|t| format!("ExecStart=/usr/bin/ssh-keygen -q -t {t} -N \"\" -f {new}/ssh_host_{t}_key\n"))
        .collect();
    format!(
        "\
# Generated by imgforge: each node makes its own SSH host keys on first boot, on the data
# partition (the root slot is read-only and the same on every node).
[Unit]
Description=Generate this node's SSH host keys
After=local-fs.target
Before=ssh.service
ConditionPathExists=!{SSH_KEY_DIR}

[Service]
Type=oneshot
UMask=0077
ExecStartPre=/usr/bin/rm -rf {new}
ExecStartPre=/usr/bin/mkdir -p {new}
{keys}ExecStart=/usr/bin/sync --file-system {new}
ExecStart=/usr/bin/mv -T {new} {SSH_KEY_DIR}

[Install]
WantedBy=multi-user.target
",
        keys = keys.concat()
    )
}

/// sshd's host keys: the node's own, on the data partition.
fn sshd_host_keys() -> String {
    let mut t =
        String::from("# Generated by imgforge: the node's own host keys, on the data partition.\n");
    for ty in SSH_KEY_TYPES {
        t.push_str(&format!("HostKey {SSH_KEY_DIR}/ssh_host_{ty}_key\n"));
    }
    t
}

/// Debian's ssl-cert makes a self-signed key at install time, which would be the same on
/// every card (PostgreSQL serves it): the image drops it, and each node makes its own, on
/// the data partition (make-ssl-cert would write into the read-only /etc).
fn snakeoil_unit() -> String {
    format!(
        "\
# Generated by imgforge: each node makes its own self-signed certificate on first boot.
[Unit]
Description=Generate this node's self-signed TLS certificate (ssl-cert snakeoil)
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target shutdown.target
Conflicts=shutdown.target
ConditionPathExists=/usr/bin/openssl
ConditionPathExists=!{key}

[Service]
Type=oneshot
UMask=0077
ExecStartPre=/usr/bin/mkdir -p -m 0755 {dir}
ExecStart=/usr/bin/openssl req -new -x509 -days 3650 -nodes -sha256 -newkey rsa:2048 -subj /CN=%H -addext subjectAltName=DNS:%H -out {cert}.tmp -keyout {key}.tmp
ExecStart=/usr/bin/chmod 644 {cert}.tmp
ExecStart=/usr/bin/chmod 640 {key}.tmp
ExecStart=/usr/bin/chown root:ssl-cert {key}.tmp
ExecStart=/usr/bin/mv {cert}.tmp {cert}
ExecStart=/usr/bin/mv {key}.tmp {key}

[Install]
WantedBy=sysinit.target
",
        dir = SNAKEOIL_KEY.rsplit_once('/').map_or("", |(d, _)| d),
        key = SNAKEOIL_KEY,
        cert = SNAKEOIL_CERT,
    )
}

/// Fills the data partition from the slot's /var (overlays/common/usr/lib/imgforge/
/// populate-var says how), before anything else in the system reads or writes /var.
const VAR_UNIT: &str = "\
# Generated by imgforge: the slot's /var into the data partition, at first boot and at the
# first boot of each new version.
[Unit]
Description=imgforge: fill the data partition from the slot's /var
DefaultDependencies=no
RequiresMountsFor=/var
Before=local-fs.target systemd-journal-flush.service systemd-random-seed.service
Before=systemd-tmpfiles-setup.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
# The bind of / it makes stays in the unit's own mount namespace.
PrivateMounts=yes
ExecStart=/usr/lib/imgforge/populate-var
StandardOutput=journal+console

[Install]
WantedBy=local-fs.target
";

/// Keeps the node's machine id across boots and versions (the root is read-only).
const MACHINE_ID_UNIT: &str = "\
# Generated by imgforge: the node's machine id, kept on the data partition.
[Unit]
Description=imgforge: keep this node's machine id on the data partition
DefaultDependencies=no
After=imgforge-var.service
Requires=imgforge-var.service
Before=sysinit.target systemd-journal-flush.service systemd-networkd.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/lib/imgforge/persist-machine-id

[Install]
WantedBy=sysinit.target
";

/// The worker's configuration: who this node is and what "ready" means for its role.
fn node_config(plan: &Plan) -> String {
    // The firewall first: a ruleset that fails to load leaves the node open, so it fails
    // the boot's readiness.
    let units: Vec<String> = std::iter::once("\"nftables.service\"".to_string())
        .chain(
            plan.services
                .iter()
                .map(|s| format!("\"{}.service\"", s.name)),
        )
        .chain(
            plan.databases
                .iter()
                .map(|d| format!("\"{}\"", pg_init_name(&d.name))),
        )
        .collect();
    let jobs: Vec<String> = plan
        .jobs
        .iter()
        .filter(|j| j.at_boot)
        .map(|j| format!("\"{}.service\"", job_name(j)))
        .collect();
    let ports: Vec<String> = plan
        .services
        .iter()
        .flat_map(|s| s.ports.iter().map(|p| p.to_string()))
        .collect();
    let http: Vec<String> = plan
        .services
        .iter()
        .filter_map(|s| s.health.as_ref().map(|u| format!("\"{u}\"")))
        .collect();
    format!(
        "# Generated by imgforge: read by the worker.\n\
         role = \"{role}\"\n\
         target = \"{target}\"\n\
         host = \"{host}\"\n\
         timeout-secs = {timeout}\n\
         \n\
         [checks]\n\
         units = [{units}]\n\
         tcp-ports = [{ports}]\n\
         http = [{http}]\n\
         jobs = [{jobs}]\n\
         {slots}",
        role = plan.role,
        target = plan.target,
        host = plan.host.name,
        timeout = plan.boot_timeout_secs.min(240),
        units = units.join(", "),
        ports = ports.join(", "),
        http = http.join(", "),
        jobs = jobs.join(", "),
        slots = slot_tables(&plan.slots),
    )
}

/// The slot list as `[[slot]]` tables (names and rules only).
fn slot_tables(slots: &[Slot]) -> String {
    #[derive(serde::Serialize)]
    struct Slots<'a> {
        slot: &'a [Slot],
    }
    if slots.is_empty() {
        return String::new();
    }
    format!(
        "\n{}",
        toml::to_string(&Slots { slot: slots }).expect("slots serialize")
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::{resolve, Request};
    use crate::profile::ProfileSource;

    fn plan() -> Plan {
        plan_of("proxy")
    }

    fn plan_of(role: &str) -> Plan {
        plan_for(role, "x86_64-vm")
    }

    pub(crate) fn plan_for(role: &str, target: &str) -> Plan {
        resolve(
            &ProfileSource::Embedded,
            &Request {
                role: role.into(),
                target: target.into(),
                site: "example".into(),
                host: None,
                version: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn device_units_are_named_as_systemd_escape_names_them() {
        assert_eq!(
            device_unit("/dev/disk/by-partlabel/imgforge-seed"),
            r"dev-disk-by\x2dpartlabel-imgforge\x2dseed.device"
        );
        assert_eq!(
            device_unit("/dev/disk/by-partuuid/1234abcd-02"),
            r"dev-disk-by\x2dpartuuid-1234abcd\x2d02.device"
        );
    }

    #[test]
    fn each_service_gets_a_unit_and_a_wants_link() {
        let gen = generate(&plan(), &BTreeSet::new(), &Ids::derive("t"));
        let unit = gen.iter().find_map(|g| match g {
            Generated::File { path, content, .. }
                if path == "etc/systemd/system/gateway.service" =>
            {
                Some(String::from_utf8_lossy(content).into_owned())
            }
            _ => None,
        });
        let unit = unit.expect("gateway unit");
        assert!(
            unit.contains(
                "ExecStart=/usr/local/bin/gateway serve --config /etc/imgforge/gateway.toml\n"
            ),
            "{unit}"
        );
        assert!(
            unit.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE\n"),
            "{unit}"
        );
        assert!(unit.contains("\nLimitNOFILE=65536\n"), "{unit}");
        assert!(gen.contains(&Generated::Symlink {
            path: "etc/systemd/system/multi-user.target.wants/gateway.service".into(),
            target: "/etc/systemd/system/gateway.service".into(),
        }));
    }

    #[test]
    fn node_config_lists_checks() {
        let text = node_config(&plan());
        assert!(
            text.contains("units = [\"nftables.service\", \"gateway.service\"]"),
            "{text}"
        );
        assert!(text.contains("tcp-ports = [80, 443]"), "{text}");
        assert!(
            text.contains("http = [\"http://127.0.0.1:80/.well-known/imgforge/health\"]"),
            "{text}"
        );
    }

    fn file(gen: &[Generated], want: &str) -> String {
        gen.iter()
            .find_map(|g| match g {
                Generated::File { path, content, .. } if path == want => {
                    Some(String::from_utf8_lossy(content).into_owned())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {want}"))
    }

    #[test]
    fn ssh_host_keys_appear_all_at_once() {
        let unit = ssh_keygen_unit();
        let keygen = unit.find("ExecStart=/usr/bin/ssh-keygen").expect("keygen lines");
        let rename = unit
            .find("ExecStart=/usr/bin/mv -T /var/lib/imgforge/ssh.new /var/lib/imgforge/ssh\n")
            .expect("a rename into place");
        assert!(keygen < rename, "{unit}");
        assert!(
            unit.lines()
                .filter(|l| l.contains("ssh-keygen"))
                .all(|l| l.contains(" -f /var/lib/imgforge/ssh.new/")),
            "{unit}"
        );
        assert!(unit.contains("ConditionPathExists=!/var/lib/imgforge/ssh\n"), "{unit}");
    }

    #[test]
    fn a_cards_readiness_decides_its_trial_and_systemd_pets_the_watchdog() {
        let card = plan_for("proxy", "rpi4");
        let gen = generate(&card, &BTreeSet::new(), &Ids::derive("t"));
        let ready = file(&gen, "etc/systemd/system/imgforge-ready.service");
        assert!(
            ready.contains("OnSuccess=imgforge-card-commit.service\n")
                && ready.contains("OnFailure=imgforge-card-fallback.service\n"),
            "{ready}"
        );
        assert!(file(&gen, "etc/systemd/system/imgforge-card-commit.service")
            .contains("ExecStart=/usr/local/bin/worker card-commit\n"));
        assert!(file(&gen, "etc/systemd/system/imgforge-card-fallback.service")
            .contains("ExecStart=/usr/local/bin/worker card-fallback\n"));
        // bcm2835_wdt refuses more than 15 s.
        let wd = file(&gen, "etc/systemd/system.conf.d/imgforge-watchdog.conf");
        assert!(wd.contains("RuntimeWatchdogSec=10s\n"), "{wd}");
        // A VM has no card slots.
        let vm = generate(&plan(), &BTreeSet::new(), &Ids::derive("t"));
        assert!(!file(&vm, "etc/systemd/system/imgforge-ready.service").contains("card"));
        assert!(!vm
            .iter()
            .any(|g| matches!(g, Generated::File { path, .. } if path.contains("card"))));
    }

    #[test]
    fn a_host_with_updates_gets_transfers_a_timer_and_readiness_gating_boot_complete() {
        let mut p = plan_of("prospectlab");
        p.version = "7".into();
        let plain = generate(&p, &BTreeSet::new(), &Ids::derive("t"));
        assert!(
            !file(&plain, "etc/systemd/system/imgforge-ready.service").contains("boot-complete")
        );
        assert!(!plain
            .iter()
            .any(|g| matches!(g, Generated::File { path, .. } if path.contains("sysupdate"))));

        p.host.updates = Some(crate::site::updates::HostUpdates {
            url: "http://10.0.2.2:8000/portal".parse().unwrap(),
            on_calendar: "Sun 03:00".parse().unwrap(),
        });
        let gen = generate(&p, &BTreeSet::new(), &Ids::derive("t"));
        let root = file(&gen, "usr/lib/sysupdate.d/10-root.transfer");
        for want in [
            "ProtectVersion=7\n",
            "Path=http://10.0.2.2:8000/portal/\n",
            "MatchPattern=prospectlab_@v.root.xz\n",
            "Type=partition\nPath=auto\n",
            "MatchPattern=root_@v\n",
            "MatchPartitionType=root-x86-64\n",
            "InstancesMax=2\n",
        ] {
            assert!(root.contains(want), "{want:?} not in\n{root}");
        }
        let entry = file(&gen, "usr/lib/sysupdate.d/90-entry.transfer");
        assert!(
            entry.contains(
                "MatchPattern=imgforge_@v+@l-@d.conf imgforge_@v+@l.conf imgforge_@v.conf\n"
            ) && entry.contains("TriesLeft=3\n")
                && entry.contains("PathRelativeTo=esp\n"),
            "{entry}"
        );
        let kernel = file(&gen, "usr/lib/sysupdate.d/20-kernel.transfer");
        assert!(
            kernel.contains("MatchPattern=vmlinuz_@v\n") && kernel.contains("Path=/imgforge\n"),
            "{kernel}"
        );
        let ready = file(&gen, "etc/systemd/system/imgforge-ready.service");
        assert!(
            ready.contains("Before=boot-complete.target\n")
                && ready.contains("OnFailure=imgforge-boot-bad.service\n")
                && ready.contains("RequiredBy=boot-complete.target\n"),
            "{ready}"
        );
        assert!(gen
            .iter()
            .any(|g| matches!(g, Generated::Symlink { path, .. }
            if path == "etc/systemd/system/boot-complete.target.requires/imgforge-ready.service")));
        let timer = file(&gen, "etc/systemd/system/imgforge-update.timer");
        assert!(timer.contains("OnCalendar=Sun 03:00\n"), "{timer}");
        // The role's backup jobs dump the databases before the other slot is written.
        let script = file(&gen, "usr/lib/imgforge/update");
        let job = p.jobs.first().expect("prospectlab has a pg_dump job");
        let dump = format!("systemctl start {}.service\n", job_name(job));
        let (before, after) = script
            .split_once(&dump)
            .unwrap_or_else(|| panic!("{script}"));
        assert!(
            before.contains("check-new") && after.contains("update \"$new\""),
            "{script}"
        );
        let bad = file(&gen, "etc/systemd/system/imgforge-boot-bad.service");
        assert!(
            bad.contains("ConditionPathExists=/sys/firmware/efi/efivars/LoaderBootCountPath-")
                && bad.contains("systemd-bless-boot bad"),
            "{bad}"
        );
    }

    #[test]
    fn app_services_run_from_their_venv_with_secrets_only_as_credentials() {
        let gen = generate(&plan_of("prospectlab"), &BTreeSet::new(), &Ids::derive("t"));
        let celery = file(&gen, "etc/systemd/system/prospectlab-celery.service");
        assert!(celery.contains("ExecStart=/usr/local/bin/worker exec --env-file /etc/imgforge/env/prospectlab-celery.env -- /opt/prospectlab/venv/bin/python -m celery"), "{celery}");
        assert!(
            celery.contains("\nUser=prospectlab\nDynamicUser=yes\n"),
            "{celery}"
        );
        assert!(
            celery.contains("WorkingDirectory=/opt/prospectlab\n"),
            "{celery}"
        );
        assert!(celery.contains("StateDirectory=prospectlab\n"), "{celery}");
        // The slot is declared for the app's service; the worker's env names it too.
        assert!(
            celery.contains("LoadCredential=db-password:/var/lib/imgforge/secrets/db-password\n"),
            "{celery}"
        );
        assert!(
            celery.contains("ProtectSystem=strict\n") && celery.contains("NoNewPrivileges=yes\n")
        );
        let env = file(&gen, "etc/imgforge/env/prospectlab-celery.env");
        assert!(env.contains("DATABASE_URL=postgresql://prospectlab:${slot:db-password}@127.0.0.1:5432/prospectlab\n"), "{env}");
        let beat = file(&gen, "etc/systemd/system/prospectlab-celerybeat.service");
        assert!(
            !beat.contains("db-password"),
            "beat does not read the password: {beat}"
        );
        let rules = file(&gen, "etc/nftables.conf");
        assert!(
            rules.contains("ip saddr { 192.168.50.0/24, 192.168.50.10 } tcp dport 5000 accept"),
            "{rules}"
        );
    }

    #[test]
    fn exec_words_are_quoted_when_needed() {
        assert_eq!(exec_word("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(exec_word("a b"), "\"a b\"");
        assert_eq!(exec_word("$HOME 50%"), "\"$$HOME 50%%\"");
    }
}
