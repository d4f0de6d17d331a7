"""The experiment panel's input checks and wording, without a server."""

import math

import pytest

from hubml.widgets.tracking import (
    ExperimentPanel,
    PanelInputError,
    check_experiment_name,
    check_metrics,
    check_params,
    ui_url,
)


@pytest.mark.parametrize(
    "metrics,message",
    [
        ({"loss": math.nan}, "metric 'loss' must be a finite number, got nan"),
        ({"loss": math.inf}, "metric 'loss' must be a finite number, got inf"),
        ({"loss": "low"}, "metric 'loss' must be a number, got str 'low'"),
        ({"": 1.0}, "metric names must be non-empty strings, got ''"),
    ],
)
def test_bad_metrics_say_what_is_wrong(metrics, message):
    with pytest.raises(PanelInputError) as info:
        check_metrics(metrics)
    assert str(info.value) == message


def test_numbers_of_any_numeric_type_are_metrics():
    import numpy as np

    assert check_metrics({"a": 1, "b": np.float32(0.5)}) == {"a": 1.0, "b": 0.5}


def test_overlong_param_value():
    with pytest.raises(
        PanelInputError, match="param 'notes' is 7000 characters long; MLflow keeps at most 6000"
    ):
        check_params({"notes": "x" * 7000})


def test_experiment_name_rules():
    assert check_experiment_name("  churn  ") == "churn"
    with pytest.raises(PanelInputError, match="choose an experiment"):
        check_experiment_name(" ")


def test_run_link_opens_the_mlflow_ui_on_its_own_origin(monkeypatch):
    monkeypatch.setenv("HUBML_PUBLIC_URL", "http://localhost:8000")
    assert (
        ui_url("3", "abc")
        == "http://mlflow--service.localhost:8000/services/mlflow/#/experiments/3/runs/abc"
    )


def test_bad_input_is_shown_in_the_panel_escaped(monkeypatch):
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", "http://127.0.0.1:1"
    )  # never reached: input is checked first
    panel = ExperimentPanel(metrics={"<i>loss</i>": math.nan}, experiment="<script>x</script>")
    assert panel.log_run() is None
    assert "must be a finite number" in panel.status.value
    assert "&lt;i&gt;loss&lt;/i&gt;" in panel.status.value and "<i>" not in panel.status.value
    assert not panel.button.disabled  # ready for another try
