"""The web UI as a person uses it, in a real browser: with JavaScript (fetch, the server's
own rendering swapped in) and without it (plain form post), keyboard only, hostile input,
and the model going away."""

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from conftest import OUT, wait_until
import requests

SPAM = ("WINNER!! As a valued network customer you have been selected to receive a £900 prize "
        "reward! To claim call 09061701461. Claim code KL341. Valid 12 hours only.")
HAM = "Are we still on for lunch tomorrow? Let me know what time works."
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">FREE prize, call now'


def wait_text(driver, css, timeout=10):
    return WebDriverWait(driver, timeout).until(EC.visibility_of_element_located((By.CSS_SELECTOR, css))).text


def classify(driver, text, guess=None):
    box = driver.find_element(By.ID, "sms")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, f"guess-{guess or 'none'}").click()
    driver.find_element(By.ID, "classify").click()


def test_classify_with_javascript(stack, browser):
    browser.get(f"{stack.url}/")  # redirects to /sms/
    assert browser.current_url.endswith("/sms/")
    assert browser.title == "SMS spam check"
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("data-enhanced") == "true"
    classify(browser, SPAM, guess="ham")
    assert wait_text(browser, "#label") == "spam"
    probability = browser.find_element(By.ID, "probability").text
    assert probability.endswith("%") and float(probability[:-1]) > 50, probability
    bar = browser.find_element(By.ID, "probability-bar")
    assert float(bar.get_attribute("value")) > 0.5
    # spam, guessed ham
    assert browser.find_element(By.ID, "agreement").text == "The classifier disagrees with your guess."
    assert browser.find_element(By.ID, "model-version").text == "v1"
    assert browser.find_element(By.ID, "result-app-version").text == "v1"
    # fetch() answered in place: no navigation happened.
    assert browser.current_url.endswith("/sms/")
    browser.save_screenshot(str(OUT / "js-spam.png"))

    classify(browser, HAM, guess="ham")
    WebDriverWait(browser, 10).until(EC.text_to_be_present_in_element((By.ID, "label"), "ham"))
    # ham, guessed ham
    assert browser.find_element(By.ID, "agreement").text == "The classifier agrees with your guess."
    browser.save_screenshot(str(OUT / "js-ham.png"))


def test_classify_without_javascript_through_the_form(stack, browser_nojs):
    b = browser_nojs
    b.get(f"{stack.url}/sms/")
    # The page's script really is off (WebDriver's own scripts still run, so ask the page).
    assert b.find_element(By.TAG_NAME, "html").get_attribute("data-enhanced") is None
    classify(b, SPAM, guess="spam")
    assert wait_text(b, "#label") == "spam"
    assert float(b.find_element(By.ID, "probability").text.rstrip("%")) > 50
    # spam, guessed spam
    assert b.find_element(By.ID, "agreement").text == "The classifier agrees with your guess."
    assert b.find_element(By.ID, "model-version").text == "v1"
    assert b.find_element(By.ID, "result-app-version").text == "v1"
    # The form keeps what the user typed and picked.
    assert b.find_element(By.ID, "sms").get_attribute("value") == SPAM
    assert b.find_element(By.ID, "guess-spam").is_selected()
    b.save_screenshot(str(OUT / "nojs-spam.png"))


def test_empty_message_gets_a_clear_message(stack, browser, browser_nojs):
    browser.get(f"{stack.url}/sms/")
    classify(browser, "   ")
    assert "type or paste a message" in wait_text(browser, "#error")
    browser_nojs.get(f"{stack.url}/sms/")
    classify(browser_nojs, "   ")
    assert "empty" in wait_text(browser_nojs, "#error")
    browser_nojs.save_screenshot(str(OUT / "nojs-empty.png"))


def test_messages_are_shown_as_text_never_run(stack, browser, browser_nojs):
    for b in (browser, browser_nojs):
        b.get(f"{stack.url}/sms/")
        classify(b, XSS, guess="spam")
        wait_text(b, "#label")
        assert b.find_elements(By.CSS_SELECTOR, "img") == []
        assert b.find_element(By.ID, "sms").get_attribute("value") == XSS
    assert browser.execute_script("return window.__xss === undefined")
    browser_nojs.save_screenshot(str(OUT / "nojs-xss.png"))


def test_keyboard_only_and_every_control_is_labelled(stack, browser):
    browser.get(f"{stack.url}/sms/")
    unlabelled = browser.execute_script("""
        return [...document.querySelectorAll('textarea, input, select')]
          .filter(e => !(e.labels && e.labels.length)).map(e => e.id);""")
    assert unlabelled == []
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)  # first focusable element: the message box
    active = browser.switch_to.active_element
    assert active.get_attribute("id") == "sms"
    active.send_keys(SPAM)
    active.send_keys(Keys.TAB)  # the guess radio group
    browser.switch_to.active_element.send_keys(Keys.TAB)  # the button
    assert browser.switch_to.active_element.get_attribute("id") == "classify"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    assert wait_text(browser, "#label") == "spam"


def test_model_unavailable_is_explained_and_recovers(stack, browser):
    browser.get(f"{stack.url}/sms/")
    stack.model.stop()
    try:
        classify(browser, SPAM)
        assert "unavailable" in wait_text(browser, "#error")
        browser.save_screenshot(str(OUT / "js-model-down.png"))
    finally:
        stack.start_model()
    wait_until(lambda: requests.get(f"{stack.url}/readyz", timeout=2).ok, "app ready again")
    classify(browser, SPAM)
    assert wait_text(browser, "#label") == "spam"


def test_the_page_counts_characters_the_way_the_server_does(stack, browser):
    """600 emoji are 600 characters to the server (1,200 UTF-16 units to a maxlength), and
    runs of spaces count once: the page lets them through; 1,001 characters it refuses
    before sending, saying the limit."""
    browser.get(f"{stack.url}/sms/")
    box = browser.find_element(By.ID, "sms")
    fill = "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))"
    emoji = "WIN " + "\U0001F600" * 596  # 600 characters; ChromeDriver cannot type non-BMP keys
    browser.execute_script(fill, box, emoji)
    assert browser.find_element(By.ID, "sms-count").text == "600 / 1000 characters"
    browser.find_element(By.ID, "classify").click()
    assert wait_text(browser, "#label") in ("spam", "ham")

    browser.execute_script(fill, box, "a" * 1001 + "     ")
    assert browser.find_element(By.ID, "sms-count").text == "1001 / 1000 characters: too long"
    browser.find_element(By.ID, "classify").click()
    assert "limit is 1000" in wait_text(browser, "#error")
