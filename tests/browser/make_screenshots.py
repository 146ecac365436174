"""Write the README's screenshots (``docs/map.png``, ``docs/search.png``) of one index.

They are taken by the browser tests' own functions (:mod:`browser_pages`): the map opened with
its first point hovered, and the search page after typing a query, its top hit drawn in 3-D.

Usage::

    python tests/browser/make_screenshots.py --index INDEX [--out docs]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from browser_pages import INSTALL_HINT, chrome, chromium_paths, open_map, search_page, served

from clasp_pl.serve import SearchEngine, create_app
from clasp_pl.viz import index_map


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, help="index folder")
    parser.add_argument("--out", default="docs", help="folder for map.png and search.png")
    parser.add_argument("--color-by", default="chemical_class")
    parser.add_argument("--queries", nargs="*", default=["olivine", "layered perovskite"])
    parser.add_argument("--search", default="high-pressure polymorph of Mg2SiO4")
    args = parser.parse_args()
    if chromium_paths() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    out = Path(args.out)
    driver = chrome()
    try:
        with tempfile.TemporaryDirectory() as folder:
            html = index_map(
                args.index, Path(folder) / "map.html", color_by=args.color_by, queries=args.queries
            )
            view = open_map(driver, html)
            view.shot.save(out / "map.png")
        with served(create_app(SearchEngine(args.index))) as url:
            page = search_page(driver, url, args.search)
            page.page.save(out / "search.png")
    finally:
        driver.quit()
    print(f"wrote {out / 'map.png'} (hovered {view.hovered[0]}) and {out / 'search.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
