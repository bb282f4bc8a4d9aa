"""The analysis report's files: its CSV tables and its HTML page (`report/index.html`).

A section of the page is `(title, html text, image paths, table rows, CSV names)`; paths are
relative to the report folder, so the page can be moved or served with its folder.
"""

from __future__ import annotations

import csv
import glob
import html
import io
import json
import math
import os

from mtljax import fileio


def write_csv(path: str, rows: list[dict]) -> str:
  """`rows` as a CSV file (columns in first-seen order, floats with 6 significant digits)."""
  fields = list(rows[0]) if rows else []
  for r in rows:
    fields += [k for k in r if k not in fields]
  buf = io.StringIO(newline="")
  w = csv.DictWriter(buf, fieldnames=fields)
  w.writeheader()
  for r in rows:
    w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
  return fileio.write_text(path, buf.getvalue())


def _fmt(v):
  if isinstance(v, float):
    return "nan" if math.isnan(v) else f"{v:.4g}"
  return str(v)


def table(rows: list[dict], max_rows: int = 60) -> str:
  """An HTML table of the first `max_rows` rows (the rest are in the section's CSV)."""
  if not rows:
    return "<p><em>(empty)</em></p>"
  cols = list(rows[0])
  head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
  body = "".join(
    "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>"
    for r in rows[:max_rows]
  )
  more = (
    f"<p><em>{len(rows) - max_rows} more rows in the CSV</em></p>" if len(rows) > max_rows else ""
  )
  return f"<table><tr>{head}</tr>{body}</table>{more}"


_CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
img{max-width:100%;border:1px solid #eee;margin:4px 0}pre{background:#f6f6f6;padding:1em;
overflow:auto;font-size:11px}h2{border-bottom:1px solid #ddd}"""


def _explanation_links(path) -> list[str]:
  """Links to the workdir's explain pages (`explanations/<split>/index.html`) that exist."""
  found = sorted(
    glob.glob(os.path.join(os.path.dirname(path), "..", "explanations", "*", "index.html"))
  )
  if not found:
    return []
  links = [
    f"<a href='../explanations/{html.escape(os.path.basename(os.path.dirname(f)))}/index.html'>"
    f"{html.escape(os.path.basename(os.path.dirname(f)))}</a>"
    for f in found
  ]
  return [f"<p>Explanations of this workdir (--mode=explain): {', '.join(links)}</p>"]


def write_html(path, run, final, sections, notes, val_fig, summary):
  """The page: the run's summary and final metrics, the validation curves (`val_fig`), each
  section, the notes on what was skipped, and the run's config; written atomically."""
  e = html.escape
  parts = [
    "<!DOCTYPE html>",
    "<html lang='en'><head><meta charset='utf-8'>",
    "<title>mtljax intrinsic multitask analysis</title>",
    f"<style>{_CSS}</style>",
    "</head><body>",
    "<h1>Intrinsic multitask analysis</h1>",
    f"<p>Workdir <code>{e(summary['workdir'])}</code>, split <b>{e(summary['split'])}</b>, "
    f"epochs {summary['epochs'][0]}–{summary['epochs'][-1]} ({len(summary['epochs'])}), "
    f"main task <b>{e(summary['main_task'])}</b>, tasks "
    f"{e(', '.join(f'{t} ({k})' for t, k in summary['tasks'].items()))}.</p>",
  ]
  parts += _explanation_links(path)
  if final:
    rows = []
    for split in ("val", "test"):
      m = final.get(split) or {}
      rows.append(
        {
          "split": split,
          **{
            k: v
            for k, v in sorted(m.items())
            if not k.endswith("/count") and not k.startswith("member")
          },
        }
      )
    parts += [
      f"<h2>Final metrics (best epoch {e(str(final.get('best_epoch')))})</h2>",
      table(rows),
    ]
  if val_fig:
    parts += ["<img src='val_metrics.png' alt='validation metrics per epoch'>"]
  for title, text, imgs, rows, csvs in sections:
    parts += [f"<h2>{e(title)}</h2>", f"<p>{text}</p>"]
    parts += [f"<img src='{e(i)}' alt='{e(title)}'>" for i in imgs]
    if rows:
      parts.append(table(rows))
    if csvs:
      parts.append("<p>Tables: " + ", ".join(f"<a href='{e(c)}'>{e(c)}</a>" for c in csvs) + "</p>")
  if notes:
    parts += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{e(n)}</li>" for n in notes] + ["</ul>"]
  parts += [
    "<h2>Run config</h2>",
    "<details><summary>config.json</summary><pre>",
    e(json.dumps(run, indent=1, default=str)),
    "</pre></details>",
    "<p><a href='summary.json'>summary.json</a></p>",
    "</body></html>",
  ]
  fileio.write_text(path, "\n".join(parts))
