"""Issue #22: the cohort quick-look page (:mod:`monai_saliency.engines.cohort.report`), on hand-made manifests and on
a real :class:`CohortRun` (the page is written by ``finish``). The page in a real browser: tests/bundles/
test_cohort_report_browser.py."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from monai_saliency.engines.cohort import CohortRun, report_html, write_report
from monai_saliency.engines.cohort.report import quicklook_image

ODD = "d ir/<b>&amp; \"x\" 'y' é.nii.gz"


def _manifest() -> dict:
    return {
        "run": {"run_id": "r<1>", "dataset_dir": "/d", "updated": "now"},
        "summary": {"ok": 2, "skipped": 0, "failed": 1, "not processed": 1},
        "studies": [
            {
                "study": ODD,
                "status": "ok",
                "error": None,
                "outputs": [
                    {"path": "d ir/<b>&amp; \"x\" 'y' é/m_map.nii.gz"},
                    {"path": "d ir/<b>&amp; \"x\" 'y' é/m_quicklook.png"},
                ],
                "prediction": {"probabilities": [0.2, 0.8], "label": 1},
            },
            {"study": "bad.dcm", "status": "failed", "error": "XACineError: <truncated> & bad", "outputs": []},
            {
                "study": "a.dcm",
                "status": "ok",
                "error": None,
                "outputs": [{"path": "a_dcm/a_sigact_spatial.gif"}, {"path": "a_dcm/a_quicklook.png"}],
                "prediction": {"probabilities": [0.9, 0.1], "label": 0},
            },
            {"study": "late.dcm", "status": "not processed", "error": None, "outputs": []},
        ],
    }


class _Page(HTMLParser):
    """Rows (attributes, cell texts), links, images and sortable headers of a page; whether its script ran
    (``data-ready``) and reported an error (``#report-error``) (also used by test_cohort_report_browser.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.headers: list[dict] = []
        self.cell = None
        self.ready = self.error = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.ready |= tag == "body" and a.get("data-ready") == "1"
        self.error |= a.get("id") == "report-error"
        if tag == "tr" and a.get("class") == "study":
            self.rows.append({"attrs": a, "cells": [], "hrefs": [], "imgs": []})
        elif tag == "th" and "sortable" in (a.get("class") or ""):
            self.headers.append(a)
        elif self.rows and tag == "td":
            self.cell = ""
        elif self.rows and tag == "a":
            self.rows[-1]["hrefs"].append(a["href"])
        elif self.rows and tag == "img":
            self.rows[-1]["imgs"].append(a["src"])

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.rows[-1]["cells"].append(self.cell)
            self.cell = None


def parse_report(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def test_one_row_per_study_with_prediction_status_and_error():
    page = parse_report(report_html(_manifest(), class_names=["normal", "stenosis"]))
    assert [r["cells"][0] for r in page.rows] == [ODD, "bad.dcm", "a.dcm", "late.dcm"]
    odd, bad, a, late = page.rows
    assert odd["cells"][1] == "stenosis (normal: 0.200, stenosis: 0.800)"
    assert a["cells"][1].startswith("normal (normal: 0.900")
    assert bad["cells"][2] == "failedXACineError: <truncated> & bad"  # failed study shown with its error
    assert late["cells"][2] == "not processed" and late["cells"][3] == "no image"
    assert bad["attrs"]["data-prediction"] == "-1.000000"


def test_names_are_escaped_and_links_percent_encoded():
    text = report_html(_manifest())
    assert "<b>&amp;" not in text and "<truncated>" not in text and "r<1>" not in text  # no raw markup
    assert "&lt;b&gt;&amp;amp; &quot;x&quot; &#x27;y&#x27; é.nii.gz" in text
    odd = parse_report(text).rows[0]
    enc = "d%20ir/%3Cb%3E%26amp%3B%20%22x%22%20%27y%27%20%C3%A9"
    assert odd["hrefs"] == [f"{enc}/m_quicklook.png", f"{enc}/m_map.nii.gz", f"{enc}/m_quicklook.png"]
    assert odd["imgs"] == [f"{enc}/m_quicklook.png"]


def test_quicklook_prefers_gif_then_png():
    assert quicklook_image([{"path": "a/x_quicklook.png"}, {"path": "a/x.gif"}]) == "a/x.gif"
    assert quicklook_image([{"path": "a/o.png"}, {"path": "a/x_quicklook.png"}]) == "a/x_quicklook.png"
    assert quicklook_image([{"path": "a/x.nii.gz"}]) is None
    assert parse_report(report_html(_manifest())).rows[2]["imgs"] == ["a_dcm/a_sigact_spatial.gif"]


def test_sorting_markup_and_self_contained():
    text = report_html(_manifest())
    page = parse_report(text)
    assert sorted(h["data-key"] for h in page.headers) == ["prediction", "status"]
    # each sortable key has a numeric value on every row (read by the script as row.dataset[key])
    for row in page.rows:
        for h in page.headers:
            float(row["attrs"][f"data-{h['data-key']}"])
    assert [r["attrs"]["data-status"] for r in page.rows] == ["3", "0", "3", "1"]
    assert [float(r["attrs"]["data-prediction"]) for r in page.rows] == [1.8, -1.0, 0.9, -1.0]
    assert "window.onerror" in text and "addEventListener('click'" in text
    assert not re.search(r"(src|href)=\"(https?:|//)", text) and "<link" not in text  # nothing from the network


def test_write_report_atomic_and_written_by_finish(tmp_path: Path):
    path = write_report(tmp_path, _manifest())
    assert path == tmp_path / "report.html" and path.read_text(encoding="utf-8") == report_html(_manifest())
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    (data / "s1.nii.gz").write_bytes(b"x")
    (data / "s2.nii.gz").write_bytes(b"x")
    run = CohortRun(dataset_dir=str(data), output_dir=str(out), kinds=("nifti",), class_names=["no", "yes"])
    run.prepare()
    folder = Path(run.stage("s1.nii.gz"))
    (folder / "s1_sigact_spatial.gif").write_bytes(b"GIF89a")
    run.commit("s1.nii.gz", [0.3, 0.7])
    run.fail("s2.nii.gz", ValueError("bad <input>"))
    run.finish()
    page = parse_report((out / "report.html").read_text(encoding="utf-8"))
    assert [r["cells"][0] for r in page.rows] == ["s1.nii.gz", "s2.nii.gz"]
    assert page.rows[0]["imgs"] == ["s1/s1_sigact_spatial.gif"] and page.rows[0]["cells"][2] == "ok"
    assert "bad <input>" in page.rows[1]["cells"][2]
