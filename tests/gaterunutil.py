"""MLflow models for gate-probe tests, saved to folders (no tracking server).

``save_code_model`` uses MLflow's models-from-code: the model is a source file copied into the
model directory and executed where the model is loaded, so the sandboxed child needs nothing
of the test module. Saving executes the file's top level in the test process (not ``predict``:
passing ``pip_requirements`` spares MLflow's requirement inference, which would predict), so
keep misbehaviour inside ``predict``.
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

# one double column in, one long per row out
EXAMPLE_ROWS = 3
MODEL_TEMPLATE = """\
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class Candidate(PythonModel):
    # the type hints spare a warning that MLflow emits each time the class is defined
    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[int]:
{body}


mlflow.models.set_model(Candidate())
"""


def save_code_model(folder: Path, predict_body: str) -> str:
    """Save a pyfunc model whose ``predict(self, context, model_input, params)`` runs
    ``predict_body`` (Python source, unindented), with an input example of ``EXAMPLE_ROWS``
    rows and a signature declaring one long output per row; return its directory."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    folder.mkdir(parents=True, exist_ok=True)
    code = folder / "candidate.py"
    body = textwrap.indent(textwrap.dedent(predict_body).strip("\n"), " " * 8)
    code.write_text(MODEL_TEMPLATE.replace("{body}", body))
    model_dir = folder / "model"
    signature = ModelSignature(Schema([ColSpec("double", "x")]), Schema([ColSpec("long")]))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"mlflow\.")
        mlflow.pyfunc.save_model(
            str(model_dir),
            python_model=str(code),
            input_example=pd.DataFrame({"x": [float(i) for i in range(EXAMPLE_ROWS)]}),
            signature=signature,
            pip_requirements=["mlflow"],
        )
    return str(model_dir)


def save_sklearn_model(folder: Path, rows: int = 5) -> str:
    """A logistic regression on iris with an input example of ``rows`` rows."""
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    model_dir = folder / "sklearn-model"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"mlflow\.")
        mlflow.sklearn.save_model(
            model, str(model_dir), input_example=X.head(rows), pip_requirements=["scikit-learn"]
        )
    return str(model_dir)
