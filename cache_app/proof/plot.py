"""A chart of a report: wall time and spend per wave, baseline against cached.

SVG is written by hand (no dependency). PNG needs matplotlib, which is a benchmark-only
extra (``requirements-bench.txt``), never a runtime requirement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

COLOURS = {"baseline": "#9e9e9e", "cached": "#1f77b4"}
PANELS = (("time", "wall_seconds", "wall time per wave (s)"), ("cost", "spent_usd", "spend per wave (USD)"))


class PlotError(ValueError):
    pass


def check_target(path: Path) -> None:
    """Refuse an output we cannot write, before anything runs."""
    suffix = path.suffix.lower()
    if suffix not in (".svg", ".png"):
        raise PlotError(f"{path}: the plot must be .svg or .png")
    if suffix == ".png":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise PlotError("a .png plot needs matplotlib (pip install -r requirements-bench.txt); .svg needs nothing")
    if not path.parent.exists():
        raise PlotError(f"{path.parent} does not exist")


def series(result: Mapping[str, Any]) -> tuple[list[str], dict[str, dict[str, list[float]]]]:
    """Wave labels ("r1w3") and, per mode, the per-wave values of each panel."""
    modes = [m for m in ("baseline", "cached") if m in result]
    waves = result[modes[0]]["waves"]
    labels = [f"r{w['run']}w{w['wave']}" for w in waves]
    values = {
        mode: {panel: [w[group][name] for w in result[mode]["waves"]] for panel, (group, name, _) in _panels()}
        for mode in modes
    }
    return labels, values


def _panels() -> list[tuple[str, tuple[str, str, str]]]:
    return [(title, (group, name, title)) for group, name, title in PANELS]


def write_plot(result: Mapping[str, Any], path: Path) -> None:
    check_target(path)
    if path.suffix.lower() == ".png":
        _write_png(result, path)
    else:
        path.write_text(render_svg(result), encoding="utf-8")


def render_svg(result: Mapping[str, Any], *, width: int = 960, panel_height: int = 260) -> str:
    labels, values = series(result)
    modes = list(values)
    margin_left, margin_top, gap = 70, 50, 70
    height = margin_top + len(PANELS) * (panel_height + gap)
    plot_width = width - margin_left - 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{margin_left}" y="22" font-size="14">{escape(_title(result))}</text>',
    ]
    for i, mode in enumerate(modes):
        x = width - 250 + i * 110
        out.append(f'<rect x="{x}" y="12" width="12" height="12" fill="{COLOURS[mode]}"/>')
        out.append(f'<text x="{x + 16}" y="22">{mode}</text>')
    for p, (title, _spec) in enumerate(_panels()):
        top = margin_top + p * (panel_height + gap)
        out.extend(
            _panel(title, labels, {m: values[m][title] for m in modes}, margin_left, top, plot_width, panel_height)
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _title(result: Mapping[str, Any]) -> str:
    source = Path(str(result.get("workload", {}).get("source", "workload"))).name
    simulated = " (simulated provider)" if result.get("simulated") else ""
    return f"run_masterplan: {source}{simulated}"


def _panel(
    title: str, labels: Sequence[str], data: Mapping[str, Sequence[float]], left: int, top: int, width: int, height: int
) -> list[str]:
    peak = max((v for vs in data.values() for v in vs), default=0.0) or 1.0
    n = max(1, len(labels))
    slot = width / n
    bar = max(1.0, slot * 0.8 / max(1, len(data)))
    out = [
        f'<text x="{left}" y="{top - 8}" font-size="12">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + height}" x2="{left + width}" y2="{top + height}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + height}" stroke="black"/>',
    ]
    for tick in range(5):
        value = peak * tick / 4
        y = top + height - height * tick / 4
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(value)}</text>')
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#eeeeee"/>')
    for m, (mode, vs) in enumerate(data.items()):
        for i, value in enumerate(vs):
            h = height * value / peak
            x = left + i * slot + slot * 0.1 + m * bar
            out.append(
                f'<rect x="{x:.1f}" y="{top + height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{COLOURS[mode]}"><title>{escape(labels[i])} {mode}: {_fmt(value)}</title></rect>'
            )
    every = max(1, n // 20)
    for i, label in enumerate(labels):
        if i % every == 0:
            x = left + i * slot + slot / 2
            out.append(f'<text x="{x:.1f}" y="{top + height + 14}" text-anchor="middle">{escape(label)}</text>')
    return out


def _fmt(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def _write_png(result: Mapping[str, Any], path: Path) -> None:  # pragma: no cover - optional extra
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels, values = series(result)
    figure, axes = plt.subplots(len(PANELS), 1, figsize=(12, 7), sharex=True)
    positions = range(len(labels))
    for axis, (title, _spec) in zip(axes, _panels(), strict=True):
        width = 0.8 / max(1, len(values))
        for m, (mode, data) in enumerate(values.items()):
            axis.bar([p + m * width for p in positions], data[title], width=width, label=mode, color=COLOURS[mode])
        axis.set_title(title)
    axes[0].legend()
    axes[-1].set_xticks(list(positions), labels, rotation=90, fontsize=7)
    figure.suptitle(_title(result))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
