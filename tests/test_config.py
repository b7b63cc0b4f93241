"""Tests for mrdetr.config: LazyCall, instantiate, LazyConfig.load/save/apply_overrides."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from mrdetr.config import (
    ConfigKeyError,
    ConfigLoadError,
    ConfigValueError,
    InstantiationError,
    LazyCall,
    LazyConfig,
    instantiate,
    locate,
    parse_override_value,
)
from mrdetr.structures import Boxes

FIXTURES = Path(__file__).parent / "configs_fixture"
VARIANT_DIR = FIXTURES / "projects" / "v" / "configs"
BASE = VARIANT_DIR / "base.py"
VARIANT = VARIANT_DIR / "base_900q.py"
BROKEN = FIXTURES / "broken"


def _record(**kwargs):
    """A target that returns what it was called with."""
    return kwargs


# ----------------------------------------------------------------------------- LazyCall / locate


def test_lazycall_stores_dotted_target_and_instantiates():
    cfg = LazyCall(torch.nn.Linear)(in_features=2, out_features=3)
    assert isinstance(cfg, DictConfig)
    assert cfg._target_ == "torch.nn.modules.linear.Linear"
    assert locate(cfg._target_) is torch.nn.Linear
    layer = instantiate(cfg)
    assert isinstance(layer, torch.nn.Linear)
    assert (layer.in_features, layer.out_features) == (2, 3)


def test_lazycall_classmethod_target_and_unlocatable_callable():
    cfg = LazyCall(Boxes.cat)(boxes_list=[])
    assert cfg._target_ == "mrdetr.structures.boxes.Boxes.cat"
    box = Boxes(torch.tensor([[0.0, 0.0, 2.0, 3.0]]))
    cfg.boxes_list = [box, box]
    assert instantiate(cfg).tensor.shape == (2, 4)

    class Local:  # cannot be found again by dotted path: kept as the object
        def __init__(self, value):
            self.value = value

    local_cfg = LazyCall(Local)(value=5)
    assert local_cfg._target_ is Local
    assert instantiate(local_cfg).value == 5
    with pytest.raises(TypeError, match="callable or a dotted path"):
        LazyCall(3)


def test_locate_nested_attributes_and_errors():
    assert locate("mrdetr.structures.Boxes.cat") == Boxes.cat
    assert locate("collections.OrderedDict.fromkeys").__name__ == "fromkeys"
    assert locate("dict") is dict
    with pytest.raises(ImportError, match=r"'torch\.nn' has no attribute 'NoSuchLayer'"):
        locate("torch.nn.NoSuchLayer")
    with pytest.raises(ImportError, match="no_such_package_xyz"):
        locate("no_such_package_xyz.module.Thing")


# ----------------------------------------------------------------------------------- instantiate


def test_instantiate_nested_lists_dicts_and_plain_containers():
    cfg = LazyCall(_record)(
        layers=[LazyCall(torch.nn.Identity)(), {"_target_": "torch.nn.ReLU"}],
        weights={"loss_class": 2.0, "inner": {"deep": [1, 2]}},
        tuple_value=(1, 2),
        none_value=None,
    )
    built = instantiate(cfg)
    assert isinstance(built["layers"][0], torch.nn.Identity)
    assert isinstance(built["layers"][1], torch.nn.ReLU)
    # DictConfig/ListConfig without _target_ arrive as plain dict/list.
    assert type(built["weights"]) is dict and type(built["weights"]["inner"]["deep"]) is list
    assert built["weights"] == {"loss_class": 2.0, "inner": {"deep": [1, 2]}}
    assert type(built["layers"]) is list and built["tuple_value"] == (1, 2)
    assert built["none_value"] is None
    # Plain Python containers and callable targets work too; other values pass through.
    plain = instantiate({"a": ({"_target_": torch.nn.Tanh},), "b": 3})
    assert isinstance(plain["a"], tuple) and isinstance(plain["a"][0], torch.nn.Tanh)
    assert instantiate("text") == "text" and instantiate(OmegaConf.create({"x": 1})) == {"x": 1}
    assert cfg.layers[1]._target_ == "torch.nn.ReLU"  # the config is not modified


def test_instantiate_passes_objects_by_reference():
    module = torch.nn.Linear(2, 2)
    cfg = LazyCall(_record)(model=None, factor=functools.partial(max, 1))
    cfg.model = module  # detectron2 pattern: cfg.optimizer.params.model = model
    built = instantiate(cfg)
    assert built["model"] is module and built["factor"](0) == 1


def test_instantiate_subnode_resolves_relative_and_absolute_interpolations():
    root = DictConfig(
        {"model": {"num_queries": 7, "head": LazyCall(_record)(q="${..num_queries}")}},
        flags={"allow_objects": True},
    )
    root.model.head.abs_q = "${model.num_queries}"
    assert instantiate(root.model.head) == {"q": 7, "abs_q": 7}


def test_instantiate_error_names_node_path_and_target():
    cfg = LazyConfig.load(VARIANT)
    cfg.model.transformer.encoder.bad_argument = 1
    for node in (cfg, cfg.model):  # the full path is reported even for a sub-node
        with pytest.raises(InstantiationError) as info:
            instantiate(node)
        message = str(info.value)
        assert "'model.transformer.encoder'" in message
        assert "torch.nn.modules.linear.Linear" in message and "bad_argument" in message
        assert info.value.path == "model.transformer.encoder"
        assert isinstance(info.value.__cause__, TypeError)

    cfg = LazyConfig.load(VARIANT)
    cfg.model.transformer.decoder._target_ = "types.NoSuchClass"
    with pytest.raises(InstantiationError, match=r"'model\.transformer\.decoder'.*NoSuchClass"):
        instantiate(cfg.model)

    cfg = LazyConfig.load(VARIANT)
    cfg.model.criterion.num_queries = "${model.no_such_key}"
    with pytest.raises(InstantiationError, match=r"'model\.criterion\.num_queries'.*no_such_key"):
        instantiate(cfg.model)


# ------------------------------------------------------------------------------------------ load


def test_load_variant_imports_bases_and_ties_values():
    cfg = LazyConfig.load(VARIANT)
    assert set(cfg.keys()) == {"model", "optimizer", "train"}  # only dict-like variables kept
    assert cfg.model.num_queries == 900
    assert cfg.model.transformer.decoder.num_layers == 3  # delta of base.py
    assert cfg.train.output_dir == "./output/v_900q"
    assert cfg.train.max_iter == 100 and cfg.optimizer.lr == pytest.approx(2e-4)
    model = instantiate(cfg.model)
    assert model.transformer.num_queries == 900 and model.criterion.num_queries == 900
    assert model.transformer.encoder.in_features == 8
    assert model.criterion.weight_dict == {"loss_class": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}


def test_load_keys_selection():
    model = LazyConfig.load(VARIANT, "model")
    assert isinstance(model, DictConfig) and model.num_queries == 900
    model, train = LazyConfig.load(VARIANT, ("model", "train"))
    assert train.output_dir == "./output/v_900q"
    with pytest.raises(ConfigKeyError, match="no top-level key 'dataloader'.*model"):
        LazyConfig.load(VARIANT, "dataloader")


def test_variant_edits_do_not_leak_into_base():
    base_before = LazyConfig.load(BASE)
    base_before.model.hidden_dim = 99  # editing a loaded config must not leak either
    variant = LazyConfig.load(VARIANT)
    base_after = LazyConfig.load(BASE)
    assert variant.model.num_queries == 900 and variant.model.hidden_dim == 8
    assert base_after.model.num_queries == 300 and base_after.model.hidden_dim == 8
    assert base_after.train.output_dir == "./output/v_base"
    # Two imports of one node within a single load are independent copies.
    two = LazyConfig.load(VARIANT_DIR / "base_two_copies.py")
    assert two.model.num_queries == 300 and two.model.transformer.decoder.num_layers == 3
    assert two.other_model.num_queries == 1 and two.other_model.transformer.decoder.num_layers == 1


def test_load_rel_and_folder_imports():
    cfg = LazyConfig.load(VARIANT_DIR / "base_load_rel.py")
    assert cfg.model.hidden_dim == 16 and cfg.model.transformer.decoder.num_layers == 3
    assert instantiate(cfg.model).transformer.encoder.out_features == 16
    assert cfg.train.output_dir == "./output/base" and cfg.optimizer.lr == pytest.approx(1e-3)
    with pytest.raises(RuntimeError, match="must be called from a file"):
        exec("LazyConfig.load_rel('base.py')", {"LazyConfig": LazyConfig})


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.py"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        LazyConfig.load(missing)
    with pytest.raises(ConfigLoadError, match=r"raises\.py'.*ZeroDivisionError \(line 4\)"):
        LazyConfig.load(BROKEN / "raises.py")
    with pytest.raises(ConfigLoadError) as info:
        LazyConfig.load(BROKEN / "imports_raises.py")
    assert info.value.filename == str(BROKEN / "imports_raises.py")
    assert info.value.chain == [str(BROKEN / "raises.py"), str(BROKEN / "imports_raises.py")]
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    expected = str(FIXTURES / "common" / "no_such_file.py")
    with pytest.raises(ConfigLoadError, match="cannot resolve relative import") as info:
        LazyConfig.load(BROKEN / "imports_missing.py")
    assert expected in str(info.value)
    with pytest.raises(ConfigLoadError, match="cannot import name 'no_such_name'"):
        LazyConfig.load(BROKEN / "imports_missing_name.py")

    (tmp_path / "syntax.py").write_text("model = dict(\n")
    with pytest.raises(ConfigLoadError, match=r"syntax\.py'.*SyntaxError"):
        LazyConfig.load(tmp_path / "syntax.py")
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("from .a import y\n")
    with pytest.raises(ConfigLoadError, match="Circular import"):
        LazyConfig.load(tmp_path / "a.py")
    (tmp_path / "cfg.json").write_text("{}")
    with pytest.raises(ValueError, match="unsupported extension '.json'"):
        LazyConfig.load(tmp_path / "cfg.json")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigLoadError, match=r"list\.yaml'.*must be a mapping"):
        LazyConfig.load(tmp_path / "list.yaml")


# ------------------------------------------------------------------------------------- overrides


def test_apply_overrides_parses_values_and_keeps_ties():
    cfg = LazyConfig.load(BASE)
    cfg.x = {"y": [0], "z": 1}
    result = LazyConfig.apply_overrides(
        cfg,
        [
            "model.num_queries=900",
            "train.amp.enabled=True",
            "train.output_dir=/tmp/x",
            "model.transformer.encoder.in_features=2",
            "optimizer.lr=1e-4",
            "x.y=[1,2]",
            "x.z=null",
            "model.layers.1._target_=torch.nn.ReLU",
        ],
    )
    assert result is cfg
    assert cfg.model.num_queries == 900 and cfg.train.amp.enabled is True
    assert cfg.train.output_dir == "/tmp/x" and cfg.optimizer.lr == pytest.approx(1e-4)
    assert list(cfg.x.y) == [1, 2] and cfg.x.z is None
    model = instantiate(cfg.model)
    assert model.transformer.num_queries == 900 and model.criterion.num_queries == 900
    assert (
        model.transformer.encoder.in_features == 2 and model.transformer.encoder.out_features == 8
    )
    assert isinstance(model.layers[1], torch.nn.ReLU)


def test_apply_overrides_plus_creates_keys():
    cfg = LazyConfig.load(BASE)
    LazyConfig.apply_overrides(cfg, ["+train.new_key=1", "+train.new.deep=[1, 2]", "+top=abc"])
    assert cfg.train.new_key == 1 and list(cfg.train.new.deep) == [1, 2] and cfg.top == "abc"


def test_apply_overrides_unknown_key_suggests_nearest():
    cfg = LazyConfig.load(BASE)
    with pytest.raises(ConfigKeyError) as info:
        LazyConfig.apply_overrides(cfg, ["model.num_querys=900"])
    assert isinstance(info.value, KeyError)
    assert "model.num_querys" in str(info.value) and "model.num_queries" in str(info.value)
    assert info.value.suggestions[0] == "model.num_queries"
    with pytest.raises(ConfigKeyError, match="model.transformer.decoder.num_layers"):
        LazyConfig.apply_overrides(cfg, ["model.transformer.decoder.num_layer=2"])
    with pytest.raises(ConfigKeyError, match="'train.output_dir' holds a str"):
        LazyConfig.apply_overrides(cfg, ["+train.output_dir.sub=1"])
    with pytest.raises(ConfigValueError, match="key=value'.$"):
        LazyConfig.apply_overrides(cfg, ["model.num_queries"])
    # argparse hands a flag written after the overrides to them: say where it belongs
    with pytest.raises(ConfigValueError, match="put flags such as --resume before"):
        LazyConfig.apply_overrides(cfg, ["--resume"])
    assert cfg.model.num_queries == 300  # failed overrides changed nothing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("900", 900),
        ("1e-4", 1e-4),
        ("True", True),
        ("true", True),
        ("FALSE", False),
        ("null", None),
        ("None", None),
        ("'quoted'", "quoted"),
        ("/tmp/x", "/tmp/x"),
        ("[1,2]", [1, 2]),
        ("{'a': 1}", {"a": 1}),
        ("two words", "two words"),
    ],
)
def test_parse_override_value(text, expected):
    assert parse_override_value(text) == expected


# ------------------------------------------------------------------------------------------ save


def test_save_load_round_trip_keeps_targets_and_ties(tmp_path):
    cfg = LazyConfig.load(VARIANT)
    cfg.model.transformer.encoder._target_ = torch.nn.Linear  # a callable target object
    path = tmp_path / "out" / "config.yaml"
    LazyConfig.save(cfg, path)
    assert "_target_: torch.nn.modules.linear.Linear" in path.read_text()
    assert os.listdir(path.parent) == ["config.yaml"]  # atomic write leaves no temp file
    loaded = LazyConfig.load(path)
    cfg.model.transformer.encoder._target_ = "torch.nn.modules.linear.Linear"
    assert OmegaConf.to_container(loaded, resolve=False) == OmegaConf.to_container(
        cfg, resolve=False
    )
    original, reloaded = instantiate(cfg.model), instantiate(loaded.model)
    assert reloaded.criterion == original.criterion and reloaded.transformer.num_queries == 900
    assert reloaded.transformer.encoder.in_features == original.transformer.encoder.in_features
    LazyConfig.apply_overrides(loaded, ["model.num_queries=7"])  # the interpolation survived
    assert instantiate(loaded.model).criterion.num_queries == 7


def test_save_writes_repr_for_unserialisable_values(tmp_path):
    class Local:
        pass

    cfg = DictConfig(
        {
            "model": LazyCall(Local)(),
            "train": {"fn": functools.partial(max, 1), "obj": object(), "path": Path("/x")},
            "lst": ListConfig([1, 2]),
        },
        flags={"allow_objects": True},
    )
    path = tmp_path / "config.yaml"
    with pytest.warns(UserWarning, match=r"model\._target_ \(type\).*train\.fn \(partial\)"):
        LazyConfig.save(cfg, path)
    loaded = LazyConfig.load(path)
    assert loaded.train.fn.startswith("functools.partial(") and "Local" in loaded.model._target_
    assert loaded.train.path == "/x" and list(loaded.lst) == [1, 2]


def test_dotted_access_get_has_set() -> None:
    from mrdetr.config import get_dotted, has_dotted, set_dotted

    cfg = DictConfig(
        {"train": {"amp": {"enabled": True}, "seed": None, "steps": [10, 20]}},
        flags={"allow_objects": True},
    )
    plain = {"train": {"amp": {"enabled": True}, "steps": [10, 20]}}
    for tree in (cfg, plain):
        assert get_dotted(tree, "train.amp.enabled") is True
        assert get_dotted(tree, "train.steps.1") == 20
        assert get_dotted(tree, "train.missing.deep", "d") == "d"
        assert get_dotted(tree, "train.steps.5", "d") == "d"
        assert has_dotted(tree, "train.amp") and not has_dotted(tree, "train.amp.x")
    assert get_dotted(cfg, "train.seed", -1) == -1 and not has_dotted(cfg, "train.seed")
    assert "missing" not in cfg.train  # reading never creates a key
    marker = object()
    set_dotted(cfg, "train.amp.model", marker)
    set_dotted(cfg, "train.steps.0", 5)
    assert cfg.train.amp.model is marker and list(cfg.train.steps) == [5, 20]
    with pytest.raises(KeyError, match="'train.nope' is not a config node"):
        set_dotted(cfg, "train.nope.x", 1)
    with pytest.raises(ValueError, match="not a dotted key"):
        get_dotted(cfg, "train..amp")
