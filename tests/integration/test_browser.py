"""The explorer in a real headless Chromium (CONTRACT 7): links, search, the address page, live updates.

A real `twistd chaincore` node on regtest gets blocks and a payment from the
wallet and miner CLIs; selenium drives Debian's `chromium` through
`chromedriver` (its calls are blocking, so they run in a thread while the
reactor waits).  Without Chromium, chromedriver or selenium the tests are
skipped with a message saying what to install.
"""

import os
import shutil
import sys
import urllib.request

from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue

from tests.support.processes import child_env
from tests.support.waiting import free_port

from ..service import test_plugin as plugin  # by module, so its tests are not collected here again

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
# A closed network: nothing in the background may try to reach the internet.
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                  "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-default-apps", "--metrics-recording-only", "--window-size=1280,1000")
STEP_TIMEOUT_S = 20


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM or not CHROMEDRIVER:
        return ("headless Chromium is not installed: apt-get install chromium chromium-driver "
                "(.ci/run does this) to run the explorer's browser tests")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install selenium (tox does this) to run the explorer's browser tests"
    return None


def start_browser():
    from selenium import webdriver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


class BrowserTests(plugin.PluginTestCase):
    timeout = 180

    def setUp(self):
        reason = missing_browser()
        if reason:
            from twisted.trial.unittest import SkipTest
            raise SkipTest(reason)
        super().setUp()

    async def cli(self, module: str, *args) -> str:
        """Run a console script (as `python -m`) against the node; its stdout, or a failure with its output."""
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", f"chaincore.cli.{module}", *args],
            env=child_env(CHAINCORE_WALLET_PASSPHRASE="", CHAINCORE_NODE=self.base), path=self.folder)
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        return out.decode().strip()

    async def story(self, blocks: int = 101, pay: bool = True):
        """A node with `blocks` blocks to Alice and, with pay, a confirmed payment of 10.5 coins to Bob."""
        self.folder = self.mktemp_dir()
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.node = self.start(port, os.path.join(self.folder, "node"))
        await self.wait_for_status(self.base, self.node)
        self.alice = await self.cli("wallet", "create", "--wallet", "alice.json")
        self.bob = await self.cli("wallet", "create", "--wallet", "bob.json")
        await self.cli("miner", "--blocks", str(blocks), "--workers", "1", "--address", self.alice)
        self.payment = None
        if pay:
            sent = await self.cli("wallet", "send", "--wallet", "alice.json", "--to", self.bob, "--amount", "10.5")
            self.payment = sent.split()[-2]
            await self.cli("miner", "--blocks", "1", "--workers", "1", "--address", self.alice)
        self.driver = await deferToThread(start_browser)
        self.addCleanup(deferToThread, self.driver.quit)

    async def browse(self, fn, *args):
        return await deferToThread(fn, *args)

    def wait_for(self, condition, what: str):
        """Wait until condition(driver) holds; an element the live page replaced meanwhile is looked up again
        (Chrome says so as a stale element, or, when a navigation detaches it between the look-up and the
        read, as "Node with given id does not belong to the document")."""
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        def holds(driver):
            try:
                return condition(driver)
            except WebDriverException as e:
                if "does not belong to the document" in str(e):
                    return False
                raise

        wait = WebDriverWait(self.driver, STEP_TIMEOUT_S, 0.1, ignored_exceptions=[StaleElementReferenceException])
        return deferToThread(lambda: wait.until(holds, what))

    async def test_links_search_and_address_page(self):
        """Every link on the home page answers, search finds a block, a payment and an address, and the
        address page shows the payment and Bob's spendable coins."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        await self.story()
        driver = self.driver
        await self.browse(driver.get, self.base + "/")
        self.assertIn("ChainCore", driver.title)
        hrefs = await self.browse(lambda: sorted({a.get_attribute("href") for a in driver.find_elements(By.TAG_NAME, "a")}))
        local = [h for h in hrefs if h.startswith(self.base)]
        self.assertGreater(len(local), 10)
        for href in local:
            status = await deferToThread(lambda h=href: urllib.request.urlopen(h, timeout=10).status)
            self.assertEqual(status, 200, href)

        # the tip's row on the home page opens its block page
        await self.browse(lambda: driver.find_element(By.CSS_SELECTOR, "#latest-blocks tr:nth-child(2) a").click())
        await self.wait_for(lambda d: "/explorer/block/" in d.current_url, "a block page")
        self.assertIn("Block 102", await self.browse(lambda: driver.find_element(By.TAG_NAME, "h1").text))

        async def search(q):
            box = await self.browse(driver.find_element, By.NAME, "q")
            await self.browse(box.send_keys, q + Keys.ENTER)

        await search(self.payment)
        await self.wait_for(lambda d: d.current_url.endswith("/explorer/tx/" + self.payment), "the payment's page")
        text = await self.browse(lambda: driver.find_element(By.TAG_NAME, "main").text)
        self.assertIn("1 confirmation", text)
        self.assertIn(self.alice, text)  # the input's address
        self.assertIn("10.5", text)

        await search(self.bob)
        await self.wait_for(lambda d: "/explorer/address/" + self.bob in d.current_url, "Bob's page")
        text = await self.browse(lambda: driver.find_element(By.TAG_NAME, "main").text)
        self.assertRegex(text, r"Spendable\s+10\.5 coins")
        await self.browse(lambda: driver.find_element(By.CSS_SELECTOR, "#history a.hash").click())
        await self.wait_for(lambda d: d.current_url.endswith("/explorer/tx/" + self.payment), "the history link")

        await search("no such thing")
        await self.wait_for(lambda d: "Nothing matched" in d.find_element(By.TAG_NAME, "main").text, "a 404 page")

        await search("7")
        await self.wait_for(lambda d: "Block 7" in d.find_element(By.TAG_NAME, "h1").text, "block 7 by height")
        await self.stop(self.node)

    async def test_new_block_appears_without_reload(self):
        """With the home page open, a block mined elsewhere shows up on it through /events, without a reload."""
        from selenium.webdriver.common.by import By
        await self.story(blocks=3, pay=False)
        driver = self.driver
        await self.browse(driver.get, self.base + "/")
        await self.wait_for(lambda d: d.find_element(By.ID, "live").text == "live", "the event stream")
        await self.browse(driver.execute_script, "window.stillTheSamePage = true;")
        first_row = "#latest-blocks tr:nth-child(2) td:first-child"
        self.assertEqual(await self.browse(lambda: driver.find_element(By.CSS_SELECTOR, first_row).text), "3")
        await self.cli("miner", "--blocks", "1", "--workers", "1", "--address", self.alice)
        await self.wait_for(lambda d: d.find_element(By.CSS_SELECTOR, first_row).text == "4", "block 4 on the page")
        self.assertTrue(await self.browse(driver.execute_script, "return window.stillTheSamePage === true;"))
        await self.stop(self.node)
