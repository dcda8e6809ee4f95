#!/usr/bin/python3
"""Signs in at the gateway's login page in Debian's chromium (headless, Selenium) with a
`next` an attacker chose, and prints where the browser lands: the open-redirect check must
keep it on the gateway's host, whatever a browser makes of the characters (it drops a tab,
so `/<tab>/evil.test/` would be `//evil.test/`). Every other host resolves to 127.0.0.1 too,
so a redirect that escaped would show as that host in the URL.

usage: browser_next.py PORT HOST NEXT_QUERY_VALUE USER PASSWORD TOTP_SECRET_BASE32"""
import subprocess, sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

port, host, nxt, user, password, secret = sys.argv[1:7]
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--host-resolver-rules=MAP * 127.0.0.1"]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    wait = WebDriverWait(driver, 20)
    driver.get(f"http://{host}:{port}/.gateway/login?next={nxt}")
    code = subprocess.run(["oathtool", "--totp", "-b", secret], check=True, capture_output=True, text=True).stdout.strip()
    for name, value in [("user", user), ("password", password), ("code", code)]:
        driver.find_element(By.ID, name).send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "/.gateway/login" not in d.current_url)
    print("landed on:", driver.current_url)
finally:
    driver.quit()
