"""The SVG chart helpers: well-formed, escaped, scaled into the plot, gaps kept."""

import xml.etree.ElementTree as ET

import pytest

from cache_app.console import charts

NS = {"svg": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on malformed markup


def polylines(root: ET.Element) -> list[list[tuple[float, float]]]:
    return [
        [tuple(float(v) for v in pair.split(",")) for pair in line.get("points").split()]
        for line in root.iterfind(".//svg:polyline", NS)
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 1.0),
        (-3, 1.0),
        (0.7, 1.0),
        (1.0, 1.0),
        (1.2, 2.0),
        (2.2, 2.5),
        (3, 5.0),
        (7, 10.0),
        (0.031, 0.05),
        (120, 200),
    ],
)
def test_nice_ceiling(value, expected):
    assert charts.nice_ceiling(value) == pytest.approx(expected)


def test_line_chart_scales_points_into_the_plot_area():
    svg = charts.line_chart(
        [charts.Series("a", [0.0, 5.0, 10.0])], ["t0", "t1", "t2"], title="T", width=400, height=200
    )
    root = parse(svg)
    (line,) = polylines(root)
    xs, ys = [p[0] for p in line], [p[1] for p in line]
    assert xs[0] == pytest.approx(charts.LEFT)
    assert xs[-1] == pytest.approx(400 - charts.RIGHT)
    assert ys[0] == pytest.approx(200 - charts.BOTTOM)  # 0 at the bottom
    assert ys[-1] == pytest.approx(charts.TOP)  # the maximum (10, a nice ceiling) at the top
    assert ys[1] == pytest.approx((ys[0] + ys[-1]) / 2)
    assert root.get("data-kind") == "line"
    assert root.get("data-points") == "3"


def test_none_values_break_the_line_instead_of_dropping_to_zero():
    root = parse(charts.line_chart([charts.Series("a", [1, 2, None, 3, 4, None, 5])], list("abcdefg"), title="T"))
    lines = polylines(root)
    assert [len(line) for line in lines] == [2, 2]
    assert len(root.findall(".//svg:circle", NS)) == 1  # the lone last point is a dot


def test_every_text_is_escaped():
    evil = '<script>alert("x")</script>&'
    svg = str(charts.line_chart([charts.Series(evil, [1.0])], [evil], title=evil))
    svg += str(charts.bar_chart([(evil, 2.0)], title=evil))
    svg += str(charts.hbar_chart([(evil, 2.0)], title=evil))
    assert "<script>" not in svg
    for part in svg.split("</svg>")[:-1]:
        parse(part + "</svg>")


def test_no_data_renders_an_empty_state_with_the_message():
    for svg in (
        charts.line_chart([charts.Series("a", [None, None])], ["x", "y"], title="T", empty_message="Nothing yet"),
        charts.bar_chart([("1", 0.0)], title="T", empty_message="Nothing yet"),
        charts.hbar_chart([], title="T", empty_message="Nothing yet"),
    ):
        root = parse(svg)
        assert root.get("data-kind") == "empty"
        assert "Nothing yet" in "".join(root.itertext())


def test_series_length_must_match_labels():
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        charts.line_chart([charts.Series("a", [1, 2])], ["a", "b", "c"], title="T")


def test_bar_heights_are_proportional_and_highlight_recolours():
    root = parse(charts.bar_chart([("1", 1.0), ("2", 4.0)], title="T", highlight=lambda label: label == "2"))
    rects = root.findall("svg:rect", NS)
    assert float(rects[1].get("height")) == pytest.approx(4 * float(rects[0].get("height")))
    assert rects[0].get("fill") == charts.PALETTE[0]
    assert rects[1].get("fill") == charts.PALETTE[1]


def test_x_labels_are_thinned_to_a_readable_number():
    labels = [f"{i:02d}:00" for i in range(60)]
    root = parse(charts.line_chart([charts.Series("a", list(range(60)))], labels, title="T"))
    shown = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if t.text in labels]
    assert labels[0] in shown
    assert labels[-1] in shown
    assert len(shown) <= charts.MAX_X_LABELS + 1


def test_long_ranking_labels_are_shortened_but_kept_whole_in_the_tooltip():
    name = "a-very-long-masterplan-name-that-goes-on-and-on"
    root = parse(charts.hbar_chart([(name, 3.0)], title="T", fmt=charts.dollars))
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any(t.endswith("\u2026") and len(t) == charts.LABEL_CHARS for t in texts)
    assert f"{name}: $3.00" in "".join(root.itertext())
