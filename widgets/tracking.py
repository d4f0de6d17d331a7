"""The experiment panel: log a run (params, metrics, model, notebook snapshot, environment) by
clicking "Log run", then follow the link to it in the MLflow UI.

Pure ipywidgets (no JS build). mlflow, nbconvert and the model flavours are imported only when
the panel needs them.
"""

from __future__ import annotations

import html
import json
import math
import os
import platform
import sys
import threading

import ipywidgets as w

# MLflow's own limits (mlflow.utils.validation), checked here so the message comes at once
MAX_PARAM_VALUE_LENGTH = 6000
MAX_ENTITY_KEY_LENGTH = 250
MAX_EXPERIMENT_NAME_LENGTH = 500


class PanelInputError(ValueError):
    """Input the person can fix; the message is shown in the panel as is."""


def check_metrics(metrics: dict | None) -> dict[str, float]:
    out = {}
    for key, value in (metrics or {}).items():
        _check_key("metric", key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(value)  # numpy scalars and friends
            except (TypeError, ValueError):
                raise PanelInputError(
                    f"metric {key!r} must be a number, got {type(value).__name__} {str(value)[:40]!r}"
                ) from None
        if not math.isfinite(value):
            raise PanelInputError(f"metric {key!r} must be a finite number, got {value}")
        out[str(key)] = float(value)
    return out


def check_params(params: dict | None) -> dict[str, str]:
    out = {}
    for key, value in (params or {}).items():
        _check_key("param", key)
        text = str(value)
        if len(text) > MAX_PARAM_VALUE_LENGTH:
            raise PanelInputError(
                f"param {key!r} is {len(text)} characters long; MLflow keeps at most "
                f"{MAX_PARAM_VALUE_LENGTH}: log long values as an artifact instead"
            )
        out[str(key)] = text
    return out


def _check_key(kind: str, key) -> None:
    if not isinstance(key, str) or not key.strip():
        raise PanelInputError(f"{kind} names must be non-empty strings, got {key!r}")
    if len(key) > MAX_ENTITY_KEY_LENGTH:
        raise PanelInputError(
            f"{kind} name {key[:30]!r}... is longer than {MAX_ENTITY_KEY_LENGTH} characters"
        )


def check_experiment_name(name: str | None) -> str:
    name = (name or "").strip()
    if not name:
        raise PanelInputError("choose an experiment, or type a name to create one")
    if len(name) > MAX_EXPERIMENT_NAME_LENGTH:
        raise PanelInputError(
            f"experiment names are at most {MAX_EXPERIMENT_NAME_LENGTH} characters"
        )
    return name


def ui_url(experiment_id: str, run_id: str | None = None) -> str:
    """Link into the MLflow UI, on the mlflow service's own origin (not this server's)."""
    from hubml.extensions.common.urls import service_public_url

    frag = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return service_public_url("mlflow") + frag


def environment_listing() -> str:
    from importlib.metadata import distributions

    names = sorted(
        {f"{d.metadata['Name']}=={d.version}" for d in distributions() if d.metadata["Name"]},
        key=str.lower,
    )
    return "\n".join(names) + "\n"


def _table(title: str, rows: dict) -> str:
    if not rows:
        return f"<p><b>{html.escape(title)}</b>: none</p>"
    body = "".join(
        f"<tr><td style='padding:1px 12px 1px 0;color:#57606a'>{html.escape(str(k))}</td>"
        f"<td style='padding:1px 0'>{html.escape(str(v))}</td></tr>"
        for k, v in rows.items()
    )
    return (
        f"<b>{html.escape(title)}</b><table class='hubml-table' style='border-collapse:collapse;margin:2px 0 6px'>"
        f"{body}</table>"
    )


def _model_logger(model):
    """The mlflow flavour function for ``model`` and its keyword for the artifact name."""
    import mlflow

    kind = type(model).__module__.split(".")[0]
    if kind == "sklearn":
        import mlflow.sklearn

        def log_sklearn(model, **kw):
            # MLflow saves scikit-learn models with skops, which refuses types it was not told
            # to trust; the author's own estimator's types are the ones to trust
            from skops.io import dumps, get_untrusted_types

            return mlflow.sklearn.log_model(
                model, skops_trusted_types=get_untrusted_types(data=dumps(model)), **kw
            )

        return log_sklearn
    if kind == "torch":
        import mlflow.pytorch

        return mlflow.pytorch.log_model
    if isinstance(model, mlflow.pyfunc.PythonModel):
        return lambda model, **kw: mlflow.pyfunc.log_model(python_model=model, **kw)
    raise PanelInputError(
        f"cannot log a {type(model).__name__} model: supported are scikit-learn estimators, "
        "torch.nn.Module and mlflow.pyfunc.PythonModel"
    )


class ExperimentPanel(w.VBox):
    """Choose an experiment and log a run of this notebook with one click.

    ``ExperimentPanel(params={...}, metrics={...}, model=clf, input_example=X[:5])``
    """

    def __init__(
        self,
        params: dict | None = None,
        metrics: dict | None = None,
        model=None,
        input_example=None,
        experiment: str | None = None,
        run_name: str | None = None,
        include_notebook: bool = True,
        include_environment: bool = True,
    ):
        self.params, self.metrics = dict(params or {}), dict(metrics or {})
        self.model, self.input_example = model, input_example
        self.run_id: str | None = None
        self.run_url: str | None = None
        self.experiment = w.Combobox(
            value=experiment or "",
            placeholder="experiment name (new names are created)",
            options=[],
            description="Experiment",
            ensure_option=False,
            layout=w.Layout(width="420px"),
        )
        self.run_name = w.Text(value=run_name or "", placeholder="optional", description="Run name")
        self.include_notebook = w.Checkbox(
            value=include_notebook, description="Notebook snapshot + HTML"
        )
        self.include_environment = w.Checkbox(
            value=include_environment, description="Environment (packages)"
        )
        self.include_model = w.Checkbox(
            value=model is not None,
            disabled=model is None,
            description="Model" if model is not None else "Model (none given)",
        )
        self.summary = w.HTML(self._summary_html())
        self.button = w.Button(description="Log run", button_style="primary", icon="upload")
        self.progress = w.IntProgress(
            value=0, min=0, max=6, layout=w.Layout(width="300px", visibility="hidden")
        )
        self.status = w.HTML("")
        self.button.on_click(lambda _: self.log_run())
        super().__init__(
            [
                w.HTML("<b>Log a run to MLflow</b>"),
                self.experiment,
                self.run_name,
                self.summary,
                w.HBox([self.include_notebook, self.include_environment, self.include_model]),
                w.HBox([self.button, self.progress]),
                self.status,
            ]
        )
        self.add_class("hubml-experiment-panel")
        # listing experiments waits on the network: never block the notebook on it
        threading.Thread(target=self._load_experiment_names, daemon=True).start()

    def _load_experiment_names(self) -> None:
        names = self._experiment_names()
        if names:
            self.experiment.options = names

    # -- pieces --------------------------------------------------------------------------------

    @staticmethod
    def _experiment_names() -> list[str]:
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            return []  # no tracking server configured: MLflow would create ./mlflow.db instead
        try:
            from mlflow import MlflowClient

            return sorted(e.name for e in MlflowClient().search_experiments(max_results=200))
        except Exception:  # tracking server unreachable: the panel still works for new names
            return []

    def _summary_html(self) -> str:
        return _table("Params", self.params) + _table("Metrics", self.metrics)

    def _say(self, message: str, kind: str = "info") -> None:
        colour = {"info": "#57606a", "error": "#82071e", "ok": "#116329", "warn": "#9a6700"}[kind]
        self.status.value = f"<span style='color:{colour}'>{html.escape(message)}</span>"

    def _step(self, n: int, message: str) -> None:
        self.progress.value = n
        self._say(message)

    # -- the action ----------------------------------------------------------------------------

    def log_run(self) -> str | None:
        """Log everything selected; returns the run id (also kept on ``self.run_id``)."""
        self.button.disabled = True
        self.progress.layout.visibility = "visible"
        notes = []
        try:
            name = check_experiment_name(self.experiment.value)
            params, metrics = check_params(self.params), check_metrics(self.metrics)
            self._step(1, "Connecting to MLflow…")
            import mlflow

            experiment = mlflow.set_experiment(name)
            with mlflow.start_run(run_name=self.run_name.value.strip() or None) as run:
                self._step(2, "Logging params and metrics…")
                if params:
                    mlflow.log_params(params)
                if metrics:
                    mlflow.log_metrics(metrics)
                if self.include_model.value and self.model is not None:
                    self._step(3, "Logging the model…")
                    log_model = _model_logger(self.model)
                    kwargs = {"name": "model"}
                    if self.input_example is not None:
                        kwargs["input_example"] = self.input_example
                    log_model(self.model, **kwargs)
                if self.include_notebook.value:
                    self._step(4, "Saving a snapshot of the notebook…")
                    notes += self._log_notebook(mlflow)
                if self.include_environment.value:
                    self._step(5, "Recording the environment…")
                    mlflow.log_text(environment_listing(), "environment/requirements.txt")
                    mlflow.log_dict(
                        {
                            "python": sys.version,
                            "platform": platform.platform(),
                            "profile": os.environ.get("HUBML_PROFILE"),
                            "gpu": os.environ.get("HUBML_GPU"),
                        },
                        "environment/platform.json",
                    )
            self.run_id = run.info.run_id
            self.run_url = ui_url(experiment.experiment_id, self.run_id)
            self.progress.value = self.progress.max
            self._show_done(run.info.run_id, notes)
            return self.run_id
        except PanelInputError as e:
            self._say(str(e), "error")
        except Exception as e:  # shown in plain words, never a traceback in the panel
            self._say(f"Could not log the run: {_plain(e)}", "error")
        finally:
            self.button.disabled = False
        return None

    def _log_notebook(self, mlflow) -> list[str]:
        from hubml.kernels.context import ContextUnavailable, notebook

        try:
            nb = notebook(with_content=True)
        except ContextUnavailable as e:
            return [f"Notebook snapshot skipped: {e}"]
        stem = os.path.splitext(os.path.basename(nb["path"]))[0]
        mlflow.log_text(json.dumps(nb["content"], indent=1), f"notebook/{stem}.ipynb")
        mlflow.set_tag("hubml.notebook_saved_at", nb.get("last_modified", ""))
        import nbformat

        from hubml.extensions.common.nbhtml import notebook_html

        body = notebook_html(nbformat.from_dict(nb["content"]))
        mlflow.log_text(body, f"notebook/{stem}.html")
        return []

    def _show_done(self, run_id: str, notes: list[str]) -> None:
        extra = "".join(f"<br><span style='color:#9a6700'>{html.escape(n)}</span>" for n in notes)
        self.status.value = (
            f"<span style='color:#116329'>Logged run {html.escape(run_id)}.</span> "
            f"<a href='{html.escape(self.run_url)}' target='_blank' rel='noopener' class='hubml-run-link' style='color:#0969da;text-decoration:underline'>"
            f"Open run in MLflow</a>{extra}"
        )


def _plain(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
