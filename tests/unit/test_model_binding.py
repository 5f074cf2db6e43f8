"""Binding models to pipeline nodes: refused at validation (never at run time), with the reason."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from pathray.catalog import Catalog
from pathray.catalog.records import ModelVersion
from pathray.cli.pipelines import pipelines_app
from pathray.engine.models import resolve_models
from pathray.errors import ConfigError
from pathray.pipeline.bind import check_models, fitting_models
from pathray.pipeline.infer import infer_pipeline
from pathray.pipeline.resources import NodeResources, node_resources
from pathray.pipeline.spec import PipelineSpec
from pathray.units import registry
from pathray.units.base import Batch, Column, Resources, Unit, UnitConfig
from pipelines.nuclei.default_model import REFERENCE
from pipelines.nuclei.unet import NucleusUNet

CLASSIFIER_CHAIN = ["tissue_mask", "nucleus_segmentation", "nucleus_features"]


class _MppConfig(UnitConfig):
    mpp: float = 0.5


class PickyScorer(Unit):
    """A model unit that accepts only models made at its own resolution."""

    name = "picky_scorer"
    Config = _MppConfig
    needs_model: ClassVar[bool] = True
    inputs = (Column("image", "uint8", (None, None, 3)),)
    outputs = (Column("score", "float32"),)

    @classmethod
    def check_model(cls, version: ModelVersion) -> None:
        mpp = version.metrics.get("mpp")
        if mpp != 0.5:
            raise ConfigError(f"model mpp must be 0.5 um/px. Got {mpp} instead.")

    def __call__(self, batch: Batch) -> Batch:
        return {"score": np.zeros(len(batch["image"]), np.float32)}


@pytest.fixture(autouse=True)
def picky() -> Iterator[None]:
    registry.register(PickyScorer)
    yield
    registry.unregister(PickyScorer.name)


def _spec(model: str | None, unit: str = "picky_scorer", **extra: object) -> PipelineSpec:
    node: dict[str, object] = {"id": "score", "unit": unit, **extra}
    if model is not None:
        node["model"] = model
    return PipelineSpec.model_validate({"name": "p", "units": [node]})


def _register(catalog: Catalog, name: str, mpp: float, alias: str = "prod") -> ModelVersion:
    digest = hashlib.sha256(f"{name}{mpp}".encode()).hexdigest()
    catalog.register_model(name, "torch", task="tile scoring")
    version = catalog.add_model_version(
        name, artifact_digest=digest, artifact_uri=f"/nowhere/{digest}", metrics={"mpp": mpp}
    )
    return catalog.set_alias(name, alias, version.version)


# -- without a catalog: every validation ---------------------------------------------------------


def test_a_model_unit_without_a_model_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError) as info:
        _spec(None).ordered()
    assert str(info.value).startswith("Node 'score' (picky_scorer) loads a model, so it must bind")
    assert str(info.value).endswith("Got no model instead.")
    with pytest.raises(ConfigError, match=f"its unit ships {REFERENCE}"):
        _spec(None, unit="nucleus_unet").ordered()


def test_a_classical_unit_binding_a_model_and_a_malformed_reference_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"loads no model, so it must not bind one. Got model"):
        _spec("nuclei-rf@champion", unit="tissue_mask").ordered()
    with pytest.raises(ConfigError, match=r"Node 'score' .*'name@version' or 'name@alias'"):
        _spec("nuclei-rf").ordered()


# -- against the catalog -----------------------------------------------------------------------


def test_an_unknown_model_is_refused_with_the_closest_registered_names(
    sqlite_catalog: Catalog,
) -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'scorer' instead. Known models: nuclei-"):
        check_models(sqlite_catalog, _spec("scorer@prod"))  # only the shipped one is known
    _register(sqlite_catalog, "tile-scorer", 0.5)
    _register(sqlite_catalog, "other", 0.5)
    with pytest.raises(ConfigError) as info:
        check_models(sqlite_catalog, _spec("tile-scorr@prod"))
    message = str(info.value)
    assert "model must be registered in the catalog. Got unknown model 'tile-scorr'" in message
    assert "Closest known models: tile-scorer" in message and "other" not in message
    with pytest.raises(ConfigError, match=r"must name a registered version: .*no version 'gold'"):
        check_models(sqlite_catalog, _spec("tile-scorer@gold"))


def test_a_model_the_unit_refuses_is_refused_before_anything_runs(
    sqlite_catalog: Catalog, tmp_path: Path
) -> None:
    fits = _register(sqlite_catalog, "scorer-05", 0.5)
    _register(sqlite_catalog, "scorer-025", 0.25)
    assert check_models(sqlite_catalog, _spec("scorer-05@prod")) == {"score": fits}
    with pytest.raises(ConfigError) as info:
        resolve_models(sqlite_catalog, _spec("scorer-025@1"), tmp_path)
    assert str(info.value) == (
        "Node 'score' (picky_scorer): model 'scorer-025@1' does not fit the unit: "
        "model mpp must be 0.5 um/px. Got 0.25 instead."
    )


def test_a_shipped_model_passes_without_being_installed(sqlite_catalog: Catalog) -> None:
    spec = infer_pipeline(["tissue_mask", "nucleus_unet"], models={"nucleus_unet": REFERENCE})
    assert check_models(sqlite_catalog, spec) == {"nucleus_unet": None}
    assert sqlite_catalog.list_models() == []  # checking changed nothing
    assert NucleusUNet.bundled_model == REFERENCE


# -- inference of a pipeline binds models ----------------------------------------------------


def test_infer_binds_the_given_model_or_the_shipped_default() -> None:
    spec = infer_pipeline(["nucleus_unet", "tissue_mask"])
    assert spec.node("nucleus_unet").model == REFERENCE
    spec = infer_pipeline(["nucleus_unet", "tissue_mask"], models={"nucleus_unet": "mine@prod"})
    assert spec.node("nucleus_unet").model == "mine@prod"
    assert spec.node("tissue_mask").model is None
    with pytest.raises(ConfigError, match=r"chosen units .*Got \['segment'\] instead"):
        infer_pipeline(["nucleus_unet", "tissue_mask"], models={"segment": "mine@prod"})
    with pytest.raises(ConfigError, match=r"'nucleus_object_classifier'.*Got no model instead"):
        infer_pipeline([*CLASSIFIER_CHAIN, "nucleus_object_classifier"])


# -- per-node resources --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ("{gpu: 1}", "resources keys must be among ['cpus', 'gpus', 'memory_mb']. Got ['gpu']"),
        ("{gpus: -0.5}", "resources.gpus must be a non-negative number. Got -0.5 instead."),
        ("{cpus: many}", "resources.cpus must be a non-negative number. Got 'many' instead."),
        ("{cpus: true}", "resources.cpus must be a non-negative number. Got True instead."),
        ("{memory_mb: 1.5}", "resources.memory_mb must be a whole number of MiB. Got 1.5"),
        ("[1, 2]", "resources must be a mapping with keys among"),
    ],
)
def test_invalid_node_resources_are_refused(resources: str, message: str) -> None:
    text = f"name: p\nunits:\n  - {{id: s, unit: tissue_mask, resources: {resources}}}\n"
    with pytest.raises(ConfigError) as info:
        PipelineSpec.from_yaml(text)
    assert f"units.0.resources: {message}" in str(info.value)


def test_node_resources_round_trip_through_yaml() -> None:
    spec = _spec("scorer@prod", resources={"gpus": 0.25, "cpus": 1})
    text = spec.to_yaml()
    assert "resources: {cpus: 1.0, gpus: 0.25}" in text
    again = PipelineSpec.from_yaml(text)
    assert again == spec
    assert again.node("score").resources == NodeResources(cpus=1.0, gpus=0.25)


# -- the CLI: exit status 2 with the reason ----------------------------------------------------

app = typer.Typer()
app.add_typer(pipelines_app, name="pipelines")
runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATHRAY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PATHRAY_CATALOG_URL", raising=False)
    monkeypatch.delenv("PATHRAY_COLD", raising=False)
    return tmp_path / "home"


def _cli(*args: str, status: int) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    return result.output


def test_cli_infer_binds_the_shipped_model_and_says_so(home: Path, tmp_path: Path) -> None:
    out = _cli("pipelines", "infer", "tissue_mask", "nucleus_unet", status=0)
    assert f"# model: nucleus_unet <- {REFERENCE} (shipped with nucleus_unet" in out
    assert "bound by default" in out
    spec = PipelineSpec.model_validate(yaml.safe_load(out))
    assert spec.node("nucleus_unet").model == REFERENCE


def test_cli_refuses_a_model_unit_without_a_model_or_with_an_unknown_one(
    home: Path, tmp_path: Path
) -> None:
    out = _cli("pipelines", "infer", *CLASSIFIER_CHAIN, "nucleus_object_classifier", status=2)
    assert "loads a model, so it must bind one" in out and "Got no model instead" in out
    with Catalog.open(f"sqlite:///{home / 'catalog.db'}") as catalog:
        _register(catalog, "nuclei-classes", 0.5)
    out = _cli(
        "pipelines",
        "infer",
        *CLASSIFIER_CHAIN,
        "nucleus_object_classifier",
        "--model",
        "nucleus_object_classifier=nuclei-clases@prod",
        status=2,
    )
    assert "unknown model 'nuclei-clases'" in out and "Closest known models: nuclei-classes" in out
    out = _cli(
        "pipelines",
        "infer",
        *CLASSIFIER_CHAIN,
        "nucleus_object_classifier",
        "--model",
        "nucleus_object_classifier=nuclei-classes@prod",
        "--out",
        str(tmp_path / "p.yaml"),
        status=0,
    )
    assert "# model: nucleus_object_classifier <- nuclei-classes@prod (version 1)" in out
    assert "bound by default" not in out
    out = _cli("pipelines", "validate", str(tmp_path / "p.yaml"), status=0)
    assert "model: nucleus_object_classifier <- nuclei-classes@prod (version 1)" in out
    assert "NODE=name@alias" in _cli(
        "pipelines", "infer", "tissue_mask", "--model", "nuclei", status=2
    )


def test_cli_validate_refuses_bad_resources(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: p\nunits:\n  - {id: t, unit: tissue_mask, resources: {gpus: -1}}\n")
    out = _cli("pipelines", "validate", str(path), status=2)
    assert "resources.gpus must be a non-negative number. Got -1 instead." in out


def test_node_resources_override_the_model_card_which_overrides_the_unit() -> None:
    declared = Resources(num_cpus=1.0, num_gpus=0.5, memory_mb=256, custom={"slide_io": 1})
    card = {"cpus": 2.0, "gpus": 1.0, "memory_mb": None}  # None: the card says nothing
    assert node_resources(declared) == declared
    merged = node_resources(declared, card, NodeResources(gpus=0.25))
    assert merged == Resources(num_cpus=2.0, num_gpus=0.25, memory_mb=256, custom={"slide_io": 1})


def test_fitting_models_offers_the_versions_a_unit_accepts(sqlite_catalog: Catalog) -> None:
    assert fitting_models(sqlite_catalog, PickyScorer) == []
    _register(sqlite_catalog, "scorer-05", 0.5)
    _register(sqlite_catalog, "scorer-025", 0.25)  # refused by the unit: not offered
    assert fitting_models(sqlite_catalog, PickyScorer) == ["scorer-05@prod", "scorer-05@1"]
    assert fitting_models(sqlite_catalog, registry.get_unit("tissue_mask")) == []
    offered = fitting_models(sqlite_catalog, NucleusUNet)
    assert offered[-1] == REFERENCE  # shipped, not registered yet: offered last


def test_the_app_offers_the_fitting_models_of_the_chosen_units(sqlite_catalog: Catalog) -> None:
    from ui.views import model_choices, selection_state, spec_for

    _register(sqlite_catalog, "scorer-05", 0.5)
    _register(sqlite_catalog, "scorer-025", 0.25)
    assert model_choices(sqlite_catalog, ["tissue_mask", "picky_scorer"]) == [
        "picky_scorer=scorer-05@prod",
        "picky_scorer=scorer-05@1",
    ]
    chosen = [*CLASSIFIER_CHAIN, "nucleus_object_classifier"]
    _, graph = selection_state(chosen)
    assert graph.startswith("No pipeline yet: ") and "Got no model instead" in graph
    _, graph = selection_state(chosen, ["nucleus_object_classifier=scorer-05@prod"])
    assert "nucleus_object_classifier" in graph and not graph.startswith("No pipeline")
    spec = spec_for("Custom", None, chosen, ["nucleus_object_classifier=scorer-05@prod"])
    assert spec.node("nucleus_object_classifier").model == "scorer-05@prod"


def test_the_app_builds_with_the_model_picker(sqlite_catalog: Catalog, tmp_path: Path) -> None:
    from pathray.results.store import ColdStore
    from ui.gradio_app import build_blocks

    blocks = build_blocks(sqlite_catalog, ColdStore(tmp_path / "cold"))
    ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
    assert {"pr-units", "pr-models"} <= ids


def test_pathray_run_refuses_a_model_unit_without_a_model_before_running(
    home: Path, tmp_path: Path
) -> None:
    from pathray.cli import app as main_app

    spec = infer_pipeline(["tissue_mask", "nucleus_unet"])
    unbound = spec.node("nucleus_unet").model_copy(update={"model": None})
    path = tmp_path / "p.yaml"
    path.write_text(spec.model_copy(update={"units": (spec.units[0], unbound)}).to_yaml())
    result = runner.invoke(main_app, ["run", str(path), "--set", "S"])
    assert result.exit_code == 2, result.output
    assert "'nucleus_unet' (nucleus_unet) loads a model, so it must bind one" in result.output
    with Catalog.open(f"sqlite:///{home / 'catalog.db'}") as catalog:
        assert catalog.list_runs() == []  # refused before anything was recorded
