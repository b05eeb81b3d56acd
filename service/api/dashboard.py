"""``/dashboard``: one self-contained HTML page (no scripts, no outside assets) with each
product's variants and their CTRs, read from this process's counts."""

from __future__ import annotations

from html import escape

from service.ranker.counts import VariantStats
from service.ranker.pool_cache import PoolCache

_STYLE = """
body{font-family:system-ui,"PingFang SC","Noto Sans CJK SC",sans-serif;margin:2em;color:#222}
h1{font-size:1.4em} h2{font-size:1.1em;margin-top:2em}
table{border-collapse:collapse;width:100%} th,td{padding:4px 8px;border-bottom:1px solid #ddd}
th{text-align:left;background:#f4f4f4} td.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{background:#e8eef8;position:relative;height:1em;min-width:120px}
.bar span{position:absolute;background:#5b8def;height:100%}
.ci{position:absolute;border-left:1px solid #333;border-right:1px solid #333;height:100%}
.meta{color:#666}
"""


def render(pools: PoolCache, stats: VariantStats, *, policy_version: str, ready: bool) -> str:
    sections = []
    for pid in pools.product_ids()[:200]:
        pool = pools.get(pid).pool
        counts = stats.product(pid)
        rows = []
        for v in pool.variants:
            c = counts.get(v.variant_id)
            imp, clk = (c.impressions, c.clicks) if c else (0, 0)
            ctr = c.ctr if c else 0.0
            lo, hi = c.ci95 if c else (0.0, 1.0)
            scale = 100.0 / max(0.01, max((x.ci95[1] for x in counts.values()), default=0.01))
            bar = (
                f'<div class="bar"><span style="width:{min(100.0, ctr * scale):.1f}%"></span>'
                f'<span class="ci" style="left:{min(100.0, lo * scale):.1f}%;'
                f'width:{max(0.0, min(100.0, (hi - lo) * scale)):.1f}%"></span></div>'
            )
            rows.append(
                f"<tr><td>{escape(v.variant_id)}</td><td>{escape(v.channel)}</td>"
                f"<td>{escape(v.text)}</td><td>{escape(', '.join(v.traits))}</td>"
                f'<td class="n">{imp}</td><td class="n">{clk}</td>'
                f'<td class="n">{ctr:.2%}</td><td class="n">[{lo:.2%}, {hi:.2%}]</td>'
                f"<td>{bar}</td></tr>"
            )
        sections.append(
            f"<h2>{escape(pid)} <span class='meta'>pool {pool.pool_version} · generator "
            f"{escape(pool.generator_version)}</span></h2><table><tr><th>variant</th>"
            "<th>channel</th><th>text</th><th>traits</th><th>impressions</th><th>clicks</th>"
            "<th>CTR</th><th>95% interval</th><th></th></tr>" + "".join(rows) + "</table>"
        )
    body = "".join(sections) or "<p>No pools yet: PUT /v1/products/{id} to generate one.</p>"
    return (
        '<!doctype html><html lang="zh"><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="10"><title>copyloop</title>'
        f"<style>{_STYLE}</style></head><body><h1>copyloop · variant CTRs</h1>"
        f"<p class='meta'>policy {escape(policy_version)} · {len(pools)} products · "
        f"{'ready' if ready else 'catching up'}</p>{body}</body></html>"
    )
