"""The quick-look page of a cohort run: ``report.html`` in ``output_dir``, built from the run manifest.

One row per study (relative path, prediction, status or error, a quick-look image, links to its files), sortable by
prediction and by status (click a column header; a few lines of inline JavaScript). The page is self-contained: inline
CSS and JavaScript, no network access, it works from a ``file://`` URL. Images and files are referenced by relative
``href``/``src`` (they sit beside the page, in the studies' folders) rather than inlined as data URIs: an animated GIF
overlay may weigh megabytes, and the page must stay small for a cohort of hundreds of studies. Every name is
HTML-escaped and every link percent-encoded, so odd file names (spaces, unicode, ``<``, ``&``, quotes) display and
resolve as they are.

The quick-look image of a study is, in this order: its animated GIF overlay (``*.gif``, the angiogram bundle), its PNG
quick-look (``*_quicklook.png``, the 3D bundle), any other PNG it wrote; else the cell says "no image".
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from monai_saliency.engines.cohort.manifest import atomic_write_text

__all__ = ["REPORT_NAME", "quicklook_image", "report_html", "write_report"]

REPORT_NAME = "report.html"
# sort rank of a status (ascending: the studies that need attention first)
STATUS_ORDER = {"failed": 0, "not processed": 1, "skipped": 2, "ok": 3}

_CSS = """
body{font-family:system-ui,sans-serif;margin:1em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
th.sortable{cursor:pointer;background:#eef;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}
td.status-failed,td.status-not-processed{color:#a00;font-weight:bold}
td.status-ok{color:#060}
td img{max-width:320px;max-height:240px;image-rendering:pixelated}
.error{white-space:pre-wrap;font-family:monospace;font-weight:normal}
ul.files{margin:0;padding-left:1.2em}
#report-error{color:#fff;background:#a00;padding:4px}
"""

# Sorting: each sortable <th> names its key (data-key); each row's <td> carries the key value (data-value, numbers).
# A URL fragment ``#sort=<key>`` or ``#sort=<key>-desc`` sorts on load (a bookmarkable order).
# window.onerror writes an #report-error element into the page (a headless browser's dumped DOM shows it).
_JS = """
window.onerror=function(msg){var d=document.createElement('div');d.id='report-error';
d.textContent='script error: '+msg;document.body.insertBefore(d,document.body.firstChild);};
(function(){
var table=document.getElementById('studies'),body=table.tBodies[0];
Array.prototype.forEach.call(table.querySelectorAll('th.sortable'),function(th){
th.addEventListener('click',function(){
var key=th.dataset.key,desc=th.getAttribute('aria-sort')==='ascending';
Array.prototype.forEach.call(table.querySelectorAll('th.sortable'),function(o){o.removeAttribute('aria-sort');});
th.setAttribute('aria-sort',desc?'descending':'ascending');
var rows=Array.prototype.slice.call(body.rows);
rows.sort(function(a,b){var x=parseFloat(a.dataset[key]),y=parseFloat(b.dataset[key]);
return (desc?y-x:x-y)||(parseInt(a.dataset.index)-parseInt(b.dataset.index));});
rows.forEach(function(r){body.appendChild(r);});
});});
var m=/^#sort=(prediction|status)(-desc)?$/.exec(location.hash),th=m&&table.querySelector('th[data-key='+m[1]+']');
if(th){th.click();if(m[2])th.click();}
document.body.setAttribute('data-ready','1');
})();
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _href(rel_path: str) -> str:
    """A relative URL for a POSIX path relative to the page (every segment percent-encoded), HTML-escaped."""
    return _esc("/".join(quote(part, safe="") for part in PurePosixPath(rel_path).parts))


def quicklook_image(outputs: Sequence[Mapping[str, Any]]) -> str | None:
    """The output (path relative to ``output_dir``) shown as a study's quick-look, or None.

    Args:
        outputs: the study's manifest ``outputs`` (dicts with a ``path``).

    Returns:
        The first GIF overlay, else the ``*_quicklook.png``, else the first PNG, else None.
    """
    paths = [str(o["path"]) for o in outputs]
    for test in (
        lambda p: p.lower().endswith(".gif"),
        lambda p: p.lower().endswith("_quicklook.png"),
        lambda p: p.lower().endswith(".png"),
    ):
        for p in paths:
            if test(p):
                return p
    return None


def _prediction_cells(prediction: Mapping[str, Any] | None, class_names: Sequence[str] | None) -> tuple[float, str]:
    """Sort value and HTML of a prediction cell: value = label index + its probability (-1 without prediction)."""
    if not prediction:
        return -1.0, "&mdash;"
    probs = [float(p) for p in prediction["probabilities"]]
    label = int(prediction["label"])
    names = list(class_names) if class_names and len(class_names) == len(probs) else [str(i) for i in range(len(probs))]
    text = ", ".join(f"{_esc(n)}: {p:.3f}" for n, p in zip(names, probs))
    return label + probs[label], f"<b>{_esc(names[label])}</b> ({text})"


def report_html(manifest: Mapping[str, Any], class_names: Sequence[str] | None = None) -> str:
    """The page of a cohort run's manifest (see :mod:`monai_saliency.engines.cohort.manifest`).

    Args:
        manifest: the run manifest (``run``, ``summary``, ``studies``); output paths relative to ``output_dir``,
            where the page is written.
        class_names: names of the prediction's classes (default: their indices).

    Returns:
        The HTML text.
    """
    run = manifest.get("run", {})
    summary = manifest.get("summary", {})
    rows = []
    for index, s in enumerate(manifest.get("studies", [])):
        status = str(s.get("status", ""))
        pred_value, pred_html = _prediction_cells(s.get("prediction"), class_names)
        status_html = _esc(status)
        if s.get("error"):
            status_html += f'<div class="error">{_esc(s["error"])}</div>'
        image = quicklook_image(s.get("outputs") or [])
        image_html = (
            f'<a href="{_href(image)}"><img src="{_href(image)}" alt="{_esc(PurePosixPath(image).name)}"'
            ' loading="lazy"></a>'
            if image
            else "no image"
        )
        links = "".join(
            f'<li><a href="{_href(o["path"])}">{_esc(PurePosixPath(str(o["path"])).name)}</a></li>'
            for o in s.get("outputs") or []
        )
        rows.append(
            f'<tr class="study" data-index="{index}" data-prediction="{pred_value:.6f}"'
            f' data-status="{STATUS_ORDER.get(status, -1)}">'
            f'<td class="study-path">{_esc(s.get("study", ""))}</td><td class="prediction">{pred_html}</td>'
            f'<td class="status-{_esc(status.replace(" ", "-"))}">{status_html}</td><td>{image_html}</td>'
            f'<td><ul class="files">{links}</ul></td></tr>'
        )
    counts = ", ".join(f"{_esc(k)}: {_esc(v)}" for k, v in summary.items())
    title = f"Cohort run {_esc(run.get('run_id', ''))}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        f"<h1>{title}</h1><p>Dataset: {_esc(run.get('dataset_dir', ''))}<br>Updated: {_esc(run.get('updated', ''))}"
        f"<br>Studies: {counts}. Click &ldquo;Prediction&rdquo; or &ldquo;Status&rdquo; to sort.</p>"
        '<table id="studies"><thead><tr><th>Study</th>'
        '<th class="sortable" data-key="prediction" title="sort by predicted class and its probability">Prediction</th>'
        '<th class="sortable" data-key="status" title="sort by status (failed first)">Status</th>'
        f"<th>Quick look</th><th>Files</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<script>{_JS}</script></body></html>\n"
    )


def write_report(
    output_dir: str | os.PathLike, manifest: Mapping[str, Any], class_names: Sequence[str] | None = None
) -> Path:
    """Write :func:`report_html` atomically to ``output_dir/report.html``.

    Returns:
        The page's path.
    """
    path = Path(output_dir) / REPORT_NAME
    atomic_write_text(path, report_html(manifest, class_names))
    return path
