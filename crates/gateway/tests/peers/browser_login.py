#!/usr/bin/python3
"""Signs in through the gateway's login page in Debian's chromium, headless, driven by
Selenium through chromedriver (packages chromium, chromium-driver, python3-selenium), the
way a person would: open the app, get sent to the login page, type a wrong code and see
the error, then the right one (from oathtool) and land on the app.

usage: browser_login.py PORT HOST PATH USER PASSWORD TOTP_SECRET_BASE32"""
import subprocess, sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

port, host, path, user, password, secret = sys.argv[1:7]
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          f"--host-resolver-rules=MAP {host} 127.0.0.1"]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    wait = WebDriverWait(driver, 20)
    driver.get(f"http://{host}:{port}{path}")
    wait.until(lambda d: "/.gateway/login" in d.current_url)
    assert driver.title == "Sign in", driver.title

    def sign_in(code):
        for name, value in [("user", user), ("password", password), ("code", code)]:
            field = driver.find_element(By.ID, name)
            field.clear()
            field.send_keys(value)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    sign_in("000000")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "p.error"))
    print("error shown:", driver.find_element(By.CSS_SELECTOR, "p.error").text)

    code = subprocess.run(["oathtool", "--totp", "-b", secret], check=True, capture_output=True, text=True).stdout.strip()
    sign_in(code)
    wait.until(lambda d: d.current_url.endswith(path))
    print("landed on:", driver.current_url)
    print("page:", driver.find_element(By.TAG_NAME, "body").text)
    cookies = {c["name"]: c for c in driver.get_cookies()}
    print("session cookie httpOnly:", cookies["gateway_session"]["httpOnly"])
finally:
    driver.quit()
