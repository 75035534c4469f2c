"""Screenshots of the review page for README: the camera tiles with the alert list, and an
alert's page, from a running page (e.g. `vigil demo`, which serves it until Ctrl-C).

    .venv/bin/vigil demo --port 8799 &        # wait for "the review page: ..."
    .venv/bin/python scripts/screenshots.py http://127.0.0.1:8799/ docs/screenshots

Drives Debian's chromium through Playwright (``executable_path``)."""

from __future__ import annotations

import argparse
import json
import shutil
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="the review page, e.g. http://127.0.0.1:8799/")
    p.add_argument("out", type=Path, help="folder for cameras.png and alert.png")
    args = p.parse_args()
    base = args.url.rstrip("/") + "/"
    alerts = json.loads(urllib.request.urlopen(base + "api/alerts", timeout=10).read())["alerts"]
    if not alerts:
        raise SystemExit(f"no alert at {base}: nothing to show")
    alert = max(alerts, key=lambda a: a["peak_score"])
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.goto(base)
        page.wait_for_selector(f'tr.alert-row[data-alert="{alert["alert_id"]}"] img.thumb')
        page.wait_for_function("() => [...document.images].filter(i => !i.hidden)"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        page.wait_for_timeout(500)
        page.screenshot(path=str(args.out / "cameras.png"), full_page=True)
        page.goto(base + alert["page_url"].lstrip("/"))
        video = page.wait_for_selector("#clip")
        page.wait_for_function("v => v.readyState >= 2", arg=video)
        page.evaluate("v => { v.currentTime = v.duration * 0.55; v.play(); }", video)
        page.wait_for_function("v => v.currentTime >= v.duration * 0.6", arg=video)  # the cart in view
        page.evaluate("v => v.pause()", video)
        page.wait_for_function("() => document.getElementById('snapshot').naturalWidth > 0")
        page.wait_for_timeout(500)
        page.screenshot(path=str(args.out / "alert.png"), full_page=True)
        browser.close()
    print(f"wrote {args.out / 'cameras.png'} and {args.out / 'alert.png'} (alert {alert['alert_id']})")


if __name__ == "__main__":
    main()
