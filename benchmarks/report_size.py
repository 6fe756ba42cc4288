"""Size and opening time of the HTML report of a 500-evaluation run.

Makes a 500-evaluation search (space lfm2, objectives quality, decode_ms and cache_bytes, the
synthetic evaluator on a local Ray, successive halving 128K → 512K, LFM2-1.2B seeded), writes
`star report`, and opens it three times in headless Chromium (Debian's package), timing from
navigation to the moment every plot has rendered (`body[data-rendered=true]`).

    python benchmarks/report_size.py [--budget 500]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from star.machine import machine_name
from star.report import write_report
from star.search import Search, SearchSettings, create_run
from star.store import RunStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=500)
    args = parser.parse_args()
    print(f"machine: {machine_name()}", flush=True)  # the CPU kind every figure below belongs to
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Debian's chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        settings = SearchSettings(space="lfm2", objectives=["quality", "decode_ms", "cache_bytes"],
                                  budget=args.budget, fidelities=["0", "2"], seed_presets=["lfm2-1.2b"],
                                  evaluator={"kind": "synthetic", "corpus": None, "precision": "auto",
                                             "device": "cpu", "cost_s": 0.0})
        t0 = time.perf_counter()
        Search(create_run(Path(tmp) / "run", settings), workers=2, threads_per_worker=1).run()
        search_s = time.perf_counter() - t0
        import ray

        ray.shutdown()  # the browser gets the machine to itself, as when a user opens a report
        store = RunStore.open(Path(tmp) / "run")
        page = Path(tmp) / "report.html"
        t0 = time.perf_counter()
        size = write_report(store, str(page))
        write_s = time.perf_counter() - t0
        times, marks = [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--headless"])
            for _ in range(3):
                tab = browser.new_page()
                t0 = time.perf_counter()
                tab.goto(page.as_uri())
                tab.wait_for_selector("body[data-rendered=true]", timeout=60_000)
                times.append(time.perf_counter() - t0)
                marks.append(tab.evaluate("() => Object.fromEntries(performance.getEntriesByType('mark')"
                                          ".map(m => [m.name, Math.round(m.startTime)]))"))
                tab.close()
            browser.close()
    print(f"run: {len(store.rows)} evaluations ({search_s:.1f} s to make); report written in {write_s:.2f} s")
    print(f"report size: {size / 2**20:.2f} MiB ({size:,} bytes; target < 5 MB)")
    print(f"open to fully rendered: median {statistics.median(times):.2f} s over 3 loads "
          f"({', '.join(f'{t:.2f}' for t in times)}; target < 3 s)")
    print(f"in-page milestones of the last load (ms): {marks[-1]}")


if __name__ == "__main__":
    main()
