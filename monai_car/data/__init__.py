from __future__ import annotations

from .datalist import load_car_datalist, make_case_id
from .dataset import split_valid_cases
from .demo import DemoNodule, ensure_demo_dataset, load_demo_nodules  # demo data set (issue 6)
from .demo_volumes import ensure_demo_volumes  # demo data set (issue 6)

__all__: list[str] = ["load_car_datalist", "make_case_id", "split_valid_cases"]
__all__ += ["DemoNodule", "ensure_demo_dataset", "ensure_demo_volumes", "load_demo_nodules"]  # demo (issue 6)
