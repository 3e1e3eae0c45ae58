import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from pyro_contrast.studies import plots
from pyro_contrast.studies.arviz import compare_elpd, to_inference_data
from pyro_contrast.studies.compare import compare


def _scores(num_queries=30, num_candidates=5, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(num_queries, num_candidates))
    return {
        "exact": truth,
        "lse": truth + 0.5 * rng.normal(size=truth.shape),
        "direct": rng.normal(size=truth.shape),
    }


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scores_vs_reference(tmp_path):
    scores = _scores()
    figure = plots.plot_scores_vs_reference(scores, "exact", max_points=50, path=tmp_path / "s.png")
    assert isinstance(figure, Figure)
    assert [ax.get_title() for ax in figure.axes] == ["lse", "direct"]
    for ax in figure.axes:
        (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(points.get_offsets()) == 50
        assert ax.get_xlabel() == "exact log ratio"
    assert _is_png(tmp_path / "s.png")
    with pytest.raises(FileExistsError):
        plots.plot_scores_vs_reference(scores, "exact", path=tmp_path / "s.png")
    plots.plot_scores_vs_reference(scores, "exact", path=tmp_path / "s.png", overwrite=True)
    # an array reference: every method gets a panel
    figure = plots.plot_scores_vs_reference(scores, scores["exact"] * 2)
    assert len(figure.axes) == 3


def test_calibration(tmp_path):
    scores = _scores(num_queries=200)
    figure = plots.plot_calibration(scores, "exact", num_bins=8, path=tmp_path / "c.svg")
    (ax,) = figure.axes
    assert len(ax.containers) == 2  # one error-bar series per non-reference method
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lse", "direct"]
    assert len(ax.containers[0].lines[0].get_xdata()) == 8
    text = (tmp_path / "c.svg").read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    # a perfectly calibrated method lies on the identity line
    same = plots.plot_calibration({"a": scores["exact"]}, scores["exact"], num_bins=5)
    line = same.axes[0].containers[0].lines[0]
    np.testing.assert_allclose(line.get_xdata(), line.get_ydata())


def test_calibration_is_centred_per_query_by_default():
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(40, 6))
    offsets = 100 * rng.normal(size=(40, 1))  # a term in the query: the critic ignores it

    def points(scores, **kwargs):
        line = plots.plot_calibration({"m": scores}, reference, num_bins=4, **kwargs)
        return line.axes[0].containers[0].lines[0].get_xydata()

    np.testing.assert_allclose(points(reference + offsets), points(reference), atol=1e-9)
    assert not np.allclose(
        points(reference + offsets, center=False), points(reference, center=False)
    )


def test_recall_vs_bank_size(tmp_path):
    positives = np.zeros(30, dtype=np.int64)
    results = {
        size: compare(_scores(seed=size), positives=positives, num_bootstrap=50)
        for size in (10, 100, 1000)
    }
    figure = plots.plot_recall_vs_bank_size(
        results, metric="mrr", methods=["exact", "lse"], path=tmp_path / "r.png"
    )
    (ax,) = figure.axes
    assert len(ax.lines) == 2 and len(ax.collections) == 2  # a line and a band per method
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [10, 100, 1000])
    assert_estimates = [results[m].estimate("exact", "mrr") for m in (10, 100, 1000)]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), assert_estimates)
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "mrr"
    assert _is_png(tmp_path / "r.png")
    with pytest.raises(ValueError, match="no 'bogus'"):
        plots.plot_recall_vs_bank_size(results, metric="bogus")


def test_explanation(tmp_path):
    rng = np.random.default_rng(0)
    posterior = rng.dirichlet(np.ones(20), size=3)
    labels = [f"item {m}" for m in range(20)]
    figure = plots.plot_explanation(
        posterior, labels, top=5, query=1, title="why", path=tmp_path / "e.png"
    )
    (ax,) = figure.axes
    widths = [bar.get_width() for bar in ax.patches]
    np.testing.assert_allclose(widths, np.sort(posterior[1])[-5:])
    best = int(np.argmax(posterior[1]))
    assert ax.get_yticklabels()[-1].get_text() == f"item {best}"
    assert ax.get_title() == "why" and _is_png(tmp_path / "e.png")


@pytest.mark.parametrize(
    "posterior, labels, kwargs, match",
    [
        (np.ones(3), ["a", "b"], {}, "labels"),
        (np.array([0.5, -0.1]), ["a", "b"], {}, "non-negative"),
        (np.ones((2, 3)), ["a", "b", "c"], {"query": 2}, "query"),
        (np.ones(2), ["a", "b"], {"top": 0}, "top"),
        (np.ones((1, 1, 2)), ["a", "b"], {}, "shape"),
    ],
)
def test_explanation_validation(posterior, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plots.plot_explanation(posterior, labels, **kwargs)


def test_compare_plot(tmp_path):
    scores = _scores()
    table = compare_elpd(to_inference_data(scores, np.zeros(30, dtype=np.int64)))
    figure = plots.plot_compare(table, path=tmp_path / "elpd.png")
    (ax,) = figure.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert set(scores) <= set(labels)
    assert _is_png(tmp_path / "elpd.png")


def test_input_errors(tmp_path):
    scores = _scores()
    with pytest.raises(ValueError, match="unknown reference"):
        plots.plot_calibration(scores, "truth")
    with pytest.raises(ValueError, match="no method"):
        plots.plot_calibration({"exact": scores["exact"]}, "exact")
    with pytest.raises(ValueError, match="shape"):
        plots.plot_scores_vs_reference(scores, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=".png"):
        plots.plot_calibration(scores, "exact", path=tmp_path / "c.jpg")
    with pytest.raises(ValueError, match="num_bins"):
        plots.plot_calibration(scores, "exact", num_bins=0)
