"""Model-from-code entry point of the pyfunc: MLflow runs this file to build the Python model on load.

Logging code instead of a pickled object means a served model imports `workbench` (shipped in the model's
code folder) and never unpickles classes.
"""

from mlflow.models import set_model

from workbench.registry.pyfunc import WorkbenchPyfunc

set_model(WorkbenchPyfunc())
