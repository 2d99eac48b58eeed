"""``viper compare``: one run per compression strategy (MLflow), then a table and plots."""

from lightning_viper.compare.runner import CompareError, compare, write_report
from lightning_viper.compare.spec import CompareSpec, Strategy, Variant, load_spec
from lightning_viper.compare.store import CompareStore, RunRecord

__all__ = [
    "CompareError",
    "CompareSpec",
    "CompareStore",
    "RunRecord",
    "Strategy",
    "Variant",
    "compare",
    "load_spec",
    "write_report",
]
