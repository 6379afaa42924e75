"""Drive Debian's headless Chromium through OpenStack Horizon, for pytest.

Needs (Debian bookworm):  apt-get install chromium chromium-driver libnss3-tools
and from PyPI:            selenium==4.51.0

Trust model: the private CA is added to a *fresh* NSS database at
$HOME/.pki/nssdb of a throw-away HOME, and chromedriver (hence Chromium) is
started with that HOME.  No --ignore-certificate-errors, and
acceptInsecureCerts is explicitly False, so an untrusted certificate shows
Chromium's interstitial ("Privacy error", net::ERR_CERT_AUTHORITY_INVALID).

Selenium Manager is never run: the chromedriver path is given to the Service
and the browser path to Options.binary_location (DriverFinder then skips
Selenium Manager), and SE_OFFLINE=true is set while the driver starts, as a
second guard.

Public API:
    browser(ca_pem_path, artifacts_dir)                    -> context manager, yields driver
    login(driver, base_url, username, password, domain=None)
    switch_region(driver, base_url, region)
    image_names(driver, base_url)                          -> list[str]
    screenshot(driver, artifacts_dir, name)                -> path of the PNG
    current_region(driver)                                 -> str | None
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Iterator

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = os.environ.get("HORIZON_BROWSER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HORIZON_BROWSER_CHROMEDRIVER", "/usr/bin/chromedriver")
CERTUTIL = os.environ.get("HORIZON_BROWSER_CERTUTIL", "certutil")
CA_NICKNAME = "omr-ca"
WINDOW = (1366, 900)
DEFAULT_TIMEOUT = 60

# Things Horizon (2025/2026 master) renders; see REPORT.md for the sources.
LOGIN_PATH = "/auth/login/"
SWITCH_REGION_PATH = "/auth/switch_services_region/"
IMAGES_PATH = "/project/images/"
# header/_context_selection.html -> context_selection/_overview.html
REGION_IN_HEADER = "span.context-region"
# context_selection/_region_list.html: <a href="{% url 'switch_services_region' r %}?next=...">
#   <span class="region-name dropdown-title">{{ region }}</span>
REGION_LINKS = "a[href*='/auth/switch_services_region/']"
# hz-resource-table -> hz-dynamic-table -> hz-cell -> hz-field, which replaces itself
# with <a href="ngdetails/OS::Glance::Image/<id>">name</a> for the name column.
IMAGE_NAME_LINKS = "hz-resource-table table tbody tr a[href*='OS::Glance::Image/']"
NO_ROWS = "hz-resource-table table tbody td.no-rows-help"


class HorizonError(AssertionError):
    """Horizon showed something other than what the helper expected."""


class LoginError(HorizonError):
    pass


class RegionError(HorizonError):
    pass


# --------------------------------------------------------------------------- browser


def _split_pem(pem_text: str) -> list[str]:
    certs = re.findall(
        r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem_text, re.S
    )
    return [c + "\n" for c in certs]


def make_nss_home(home: str | os.PathLike, ca_pem_path: str | os.PathLike | None) -> Path:
    """Create HOME/.pki/nssdb (empty password) and trust every CA cert in ca_pem_path.

    ca_pem_path may hold several PEM certificates (a bundle); each is added as a
    trusted SSL CA ("C,,").  With ca_pem_path=None the database is empty, which
    gives a browser that trusts no private CA (for negative tests).
    """
    home = Path(home)
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True, exist_ok=True)
    db = f"sql:{nssdb}"
    subprocess.run([CERTUTIL, "-d", db, "-N", "--empty-password"], check=True,
                   capture_output=True, text=True)
    if ca_pem_path is not None:
        certs = _split_pem(Path(ca_pem_path).read_text())
        if not certs:
            raise ValueError(f"no PEM certificate in {ca_pem_path}")
        for i, cert in enumerate(certs):
            nick = CA_NICKNAME if i == 0 else f"{CA_NICKNAME}-{i}"
            one = nssdb / f"{nick}.pem"
            one.write_text(cert)
            subprocess.run([CERTUTIL, "-d", db, "-A", "-t", "C,,", "-n", nick, "-i", str(one)],
                           check=True, capture_output=True, text=True)
        listing = subprocess.run([CERTUTIL, "-d", db, "-L"], check=True,
                                 capture_output=True, text=True).stdout
        if CA_NICKNAME not in listing:
            raise RuntimeError(f"CA not in NSS db after import:\n{listing}")
    return nssdb


def chromium_options(profile_dir: str | os.PathLike, headless: bool = True) -> Options:
    opts = Options()
    opts.binary_location = CHROMIUM
    if headless:
        opts.add_argument("--headless=new")
    for arg in (
        "--no-sandbox",                 # tests run as root
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile_dir}",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--no-proxy-server",            # loopback/sandbox only, never a proxy
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--password-store=basic",
        "--lang=en-US",
    ):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {
        "credentials_enable_service": False,
        "profile.password_manager_enabled": False,
        "profile.password_manager_leak_detection": False,
        "intl.accept_languages": "en-US,en",
    })
    opts.accept_insecure_certs = False   # the CA must really be trusted
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return opts


@contextlib.contextmanager
def _env_var(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def browser(ca_pem_path: str | os.PathLike | None, artifacts_dir: str | os.PathLike,
            *, headless: bool = True, keep_tmp: bool = False,
            page_load_timeout: float = DEFAULT_TIMEOUT) -> Iterator[webdriver.Chrome]:
    """Headless Chromium that trusts exactly the CA(s) in ca_pem_path.

    artifacts_dir receives chromedriver.log, and on an exception inside the
    with-block a screenshot, the page source and the browser console log
    (failure.png / failure.html / failure-console.txt).
    """
    artifacts = Path(artifacts_dir)
    artifacts.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="horizon-browser-"))
    home = tmp / "home"
    make_nss_home(home, ca_pem_path)
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update({
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "SE_OFFLINE": "true",
        "LANG": "C.UTF-8",
    })
    service = Service(executable_path=CHROMEDRIVER, env=env,
                      log_output=str(artifacts / "chromedriver.log"))
    opts = chromium_options(tmp / "profile", headless=headless)
    driver = None
    try:
        with _env_var("SE_OFFLINE", "true"):
            driver = webdriver.Chrome(service=service, options=opts)
        driver.set_window_size(*WINDOW)
        driver.set_page_load_timeout(page_load_timeout)
        try:
            yield driver
        except BaseException:
            _dump_failure(driver, artifacts)
            raise
    finally:
        if driver is not None:
            driver.quit()   # also stops chromedriver (Service.stop)
        else:
            with contextlib.suppress(Exception):
                service.stop()
        if not keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _dump_failure(driver, artifacts: Path) -> None:
    with contextlib.suppress(Exception):
        screenshot(driver, artifacts, "failure")
    with contextlib.suppress(Exception):
        (artifacts / "failure.html").write_text(
            f"<!-- {driver.current_url} -->\n" + driver.page_source)
    with contextlib.suppress(Exception):
        lines = [f"{e.get('level')} {e.get('message')}" for e in driver.get_log("browser")]
        (artifacts / "failure-console.txt").write_text("\n".join(lines) + "\n")


def screenshot(driver, artifacts_dir: str | os.PathLike, name: str) -> Path:
    """Save a PNG of the viewport as <artifacts_dir>/<name>.png; return its path."""
    artifacts = Path(artifacts_dir)
    artifacts.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "screenshot"
    path = artifacts / (safe if safe.endswith(".png") else safe + ".png")
    if not driver.save_screenshot(str(path)):
        raise HorizonError(f"screenshot {path} failed")
    return path


def is_cert_error_page(driver) -> bool:
    """True if Chromium shows its certificate interstitial instead of the page."""
    try:
        src = driver.page_source
    except WebDriverException:
        return False
    return ("ERR_CERT_" in src) or ("NET::ERR_CERT" in src) or (
        driver.title.strip() == "Privacy error")


# --------------------------------------------------------------------------- helpers


def _base(base_url: str) -> str:
    return base_url.rstrip("/")


def _path_of(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def _wait(driver, timeout: float = DEFAULT_TIMEOUT, poll: float = 0.25) -> WebDriverWait:
    return WebDriverWait(driver, timeout, poll_frequency=poll,
                         ignored_exceptions=(StaleElementReferenceException,
                                             NoSuchElementException))


def _document_ready(driver) -> bool:
    return driver.execute_script("return document.readyState") == "complete"


def _text(el) -> str:
    # textContent also works for elements hidden in a closed dropdown
    return " ".join((el.get_attribute("textContent") or "").split())


def _error_texts(driver) -> list[str]:
    out = []
    for css in (".alert-danger", ".alert-error", "#logout_reason",
                ".form-group.has-error .help-block", "ul.errorlist"):
        for el in driver.find_elements(By.CSS_SELECTOR, css):
            t = _text(el)
            if t and t not in out:
                out.append(t)
    return out


def _on_login_page(driver) -> bool:
    return LOGIN_PATH in _path_of(driver.current_url)


# --------------------------------------------------------------------------- login


def login(driver, base_url: str, username: str, password: str,
          domain: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Log in through Horizon's form; return the URL Horizon landed on.

    Raises LoginError carrying the page's error text (e.g. "Invalid
    credentials.") when Horizon stays on /auth/login/.
    """
    base = _base(base_url)
    driver.get(base + LOGIN_PATH)
    if is_cert_error_page(driver):
        raise LoginError(f"certificate not trusted for {base}: {driver.title}")
    wait = _wait(driver, timeout)
    user = wait.until(EC.visibility_of_element_located((By.ID, "id_username")))

    if domain is not None:
        fields = driver.find_elements(By.ID, "id_domain")
        if fields:
            field = fields[0]
            if field.tag_name.lower() == "select":    # OPENSTACK_KEYSTONE_DOMAIN_DROPDOWN
                sel = Select(field)
                try:
                    sel.select_by_visible_text(domain)
                except NoSuchElementException:
                    sel.select_by_value(domain)
            else:
                field.clear()
                field.send_keys(domain)
        # no id_domain: Horizon is single-domain (OPENSTACK_KEYSTONE_MULTIDOMAIN_SUPPORT
        # False) and logs into OPENSTACK_KEYSTONE_DEFAULT_DOMAIN; nothing to fill.

    user.clear()
    user.send_keys(username)
    pw = driver.find_element(By.ID, "id_password")
    pw.clear()
    pw.send_keys(password)

    old_html = driver.find_element(By.TAG_NAME, "html")
    buttons = driver.find_elements(By.ID, "loginBtn") or driver.find_elements(
        By.CSS_SELECTOR, "form button[type=submit], form input[type=submit]")
    if buttons:
        buttons[0].click()
    else:
        pw.submit()

    def done(d):
        if not _on_login_page(d):
            return "left"
        try:
            old_html.is_enabled()          # raises once the old page is gone
            return False
        except StaleElementReferenceException:
            pass
        if _document_ready(d) and _error_texts(d):
            return "error"
        return False

    try:
        outcome = _wait(driver, timeout).until(done)
    except TimeoutException:
        raise LoginError(f"login as {username!r} did not finish in {timeout}s; still at "
                         f"{driver.current_url}; errors: {_error_texts(driver)}") from None
    if outcome == "error":
        raise LoginError(f"login as {username!r} refused: " + " | ".join(_error_texts(driver)))
    _wait(driver, timeout).until(_document_ready)
    return driver.current_url


# --------------------------------------------------------------------------- regions


def current_region(driver) -> str | None:
    """Services region shown in the header (None when Horizon shows no region,
    i.e. the catalog of the scoped project has fewer than two regions)."""
    els = driver.find_elements(By.CSS_SELECTOR, REGION_IN_HEADER)
    return _text(els[0]) if els else None


def available_regions(driver) -> list[str]:
    """Regions listed in the header's context dropdown."""
    out = []
    for a in driver.find_elements(By.CSS_SELECTOR, REGION_LINKS):
        spans = a.find_elements(By.CSS_SELECTOR, ".region-name")
        name = _text(spans[0]) if spans else _region_from_href(a.get_attribute("href"))
        if name and name not in out:
            out.append(name)
    return out


def _region_from_href(href: str | None) -> str | None:
    if not href:
        return None
    path = _path_of(href)
    i = path.find(SWITCH_REGION_PATH)
    if i < 0:
        return None
    return urllib.parse.unquote(path[i + len(SWITCH_REGION_PATH):].strip("/"))


def switch_region(driver, base_url: str, region: str,
                  timeout: float = DEFAULT_TIMEOUT) -> None:
    """Make `region` Horizon's services region and check the header says so.

    Uses the link of the header's region list (GET
    <base>/auth/switch_services_region/<region>/?next=<panel>); when the page
    has no such link, navigates to that URL directly.
    """
    base = _base(base_url)
    base_path = _path_of(base)
    if not driver.current_url.startswith(base) or _on_login_page(driver):
        driver.get(base + "/project/")
        if _on_login_page(driver):
            raise RegionError("not logged in: call login() first")
    _wait(driver, timeout).until(_document_ready)
    if current_region(driver) == region:
        return

    link = None
    for a in driver.find_elements(By.CSS_SELECTOR, REGION_LINKS):
        spans = a.find_elements(By.CSS_SELECTOR, ".region-name")
        name = _text(spans[0]) if spans else _region_from_href(a.get_attribute("href"))
        if name == region:
            link = a
            break

    old_html = driver.find_element(By.TAG_NAME, "html")
    if link is not None:
        clicked = False
        try:
            # open the context dropdown (the <li class="dropdown"> holding the link)
            toggle = link.find_element(
                By.XPATH, "./ancestor::li[contains(@class,'dropdown')][1]"
                          "/a[contains(@class,'dropdown-toggle')]")
            toggle.click()
            WebDriverWait(driver, 5).until(lambda d: link.is_displayed())
            link.click()
            clicked = True
        except WebDriverException:
            clicked = False
        if not clicked:
            driver.get(link.get_attribute("href"))
    else:
        here = _path_of(driver.current_url)
        nxt = here if here.startswith(base_path + "/") else base_path + "/project/"
        driver.get(f"{base}{SWITCH_REGION_PATH}{urllib.parse.quote(region, safe='')}/"
                   f"?next={urllib.parse.quote(nxt)}")

    def shown(d):
        try:
            old_html.is_enabled()
            return False                   # still the page we left
        except StaleElementReferenceException:
            pass
        return _document_ready(d) and current_region(d) == region

    try:
        _wait(driver, timeout).until(shown)
    except TimeoutException:
        raise RegionError(
            f"header shows region {current_region(driver)!r}, not {region!r} "
            f"(regions offered: {available_regions(driver)}; url {driver.current_url})"
        ) from None


# --------------------------------------------------------------------------- images

_PENDING_HTTP_JS = """
try {
  if (!window.angular) return -1;
  var inj = angular.element(document.body).injector();
  if (!inj) return -1;
  return inj.get('$http').pendingRequests.length;
} catch (e) { return -2; }
"""


def _table_state(driver):
    """(names on this page, empty-message or None, pending $http count)."""
    names = [_text(a) for a in driver.find_elements(By.CSS_SELECTOR, IMAGE_NAME_LINKS)]
    empty = None
    for td in driver.find_elements(By.CSS_SELECTOR, NO_ROWS):
        if td.is_displayed():
            empty = _text(td)
    pending = driver.execute_script(_PENDING_HTTP_JS)
    return tuple(names), empty, pending


def _wait_settled(driver, timeout: float, quiet: float = 1.0):
    """Wait until the Angular table shows rows or its empty message, no $http
    request is pending, and that has not changed for `quiet` seconds.
    (The empty message is also shown for a moment *before* the list call
    returns, hence the pending-request check and the quiet period.)"""
    deadline = time.monotonic() + timeout
    last, since = None, None
    while time.monotonic() < deadline:
        try:
            state = _table_state(driver)
        except StaleElementReferenceException:
            state = None
        errors = [t for t in _error_texts(driver) if "Unable to" in t or "Error" in t]
        if errors:
            raise HorizonError("images panel: " + " | ".join(errors))
        # pending -1: no AngularJS on the page (only possible with a mock page,
        # since rows/empty message are rendered by Angular itself)
        if state is not None and (state[0] or state[1]) and state[2] in (0, -1):
            if state == last:
                if time.monotonic() - since >= quiet:
                    return state
            else:
                last, since = state, time.monotonic()
        else:
            last, since = None, None
        time.sleep(0.2)
    raise TimeoutException(f"images table did not settle in {timeout}s "
                           f"(last state {_table_state(driver)})")


def _next_page_link(driver):
    for a in driver.find_elements(By.CSS_SELECTOR, "hz-resource-table st-pagination a"):
        if a.is_displayed() and "Next" in _text(a):
            return a
    return None


def image_names(driver, base_url: str, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Names in Project > Compute > Images (all pages), in table order."""
    base = _base(base_url)
    driver.get(base + IMAGES_PATH)
    if _on_login_page(driver):
        raise HorizonError("not logged in (redirected to the login page)")
    _wait(driver, timeout).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, "hz-resource-table table, table#images"))

    if not driver.find_elements(By.CSS_SELECTOR, "hz-resource-table table"):
        return _legacy_image_names(driver, timeout)   # ANGULAR_FEATURES['images_panel']=False

    names: list[str] = []
    for _page in range(1000):
        state = _wait_settled(driver, timeout)
        if not state[0]:
            if "search criteria" in (state[1] or ""):
                raise HorizonError(f"images panel wants a filter first: {state[1]!r}")
            break                                   # 'No items to display.'
        names.extend(n for n in state[0])
        nxt = _next_page_link(driver)
        if nxt is None:
            break
        first = driver.find_elements(By.CSS_SELECTOR, IMAGE_NAME_LINKS)[0]
        nxt.click()
        _wait(driver, timeout).until(EC.staleness_of(first))
    return names


def _legacy_image_names(driver, timeout: float) -> list[str]:
    """Django-table images panel: <table id="images"><tr data-display="name">."""
    names: list[str] = []
    while True:
        _wait(driver, timeout).until(_document_ready)
        names += [r.get_attribute("data-display")
                  for r in driver.find_elements(By.CSS_SELECTOR,
                                                "table#images tbody tr[data-display]")]
        more = driver.find_elements(By.CSS_SELECTOR, "table#images tfoot a[href*='marker=']")
        more = [a for a in more if "prev" not in (a.get_attribute("href") or "")]
        if not more:
            return names
        driver.get(more[0].get_attribute("href"))
