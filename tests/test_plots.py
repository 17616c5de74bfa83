"""`dvc plots show` makes pages that draw without a network: the chart libraries travel inside
the page (DVC's own page loads them from a CDN and, offline, shows blank plots in silence)."""

from __future__ import annotations

import shutil
import subprocess

import yaml
from helpers.data import REPO
from helpers.project import dvc, init_pipeline_repo


def test_plots_page_carries_its_chart_libraries(tmp_path):
    env = init_pipeline_repo(tmp_path)
    shutil.copy(REPO / ".dvc/config", tmp_path / ".dvc/config")
    shutil.copytree(REPO / "docs/plots", tmp_path / "docs/plots")
    top_level = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": top_level}))
    history = tmp_path / "reports/train/history.csv"
    history.parent.mkdir(parents=True)
    history.write_text(
        "epoch,train_loss,train_acc,val_loss,val_acc,lr\n"
        "1,0.5,0.8,0.4,0.85,0.01\n2,0.3,0.9,0.35,0.9,0.005\n"
    )
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    dvc(tmp_path, env, "plots", "show")
    page = (tmp_path / "dvc_plots/index.html").read_text()
    assert "<script src=" not in page and "cdn.jsdelivr" not in page
    assert page.count("vegaEmbed('#") == len(top_level)
    for library in ("vega", "vegaLite", "vegaEmbed"):  # each library's UMD bundle sets its global
        assert f"self).{library}=" in page, library
