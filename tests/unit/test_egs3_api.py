"""Upstream ESPnet3's names that egs3 recipes import, at upstream's paths, with upstream's behaviour."""

from __future__ import annotations

import importlib
import io
import pickle
import shutil
import sys
import tarfile
import textwrap
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet3.components.data.base_dataset import BaseDataset
from espnet3.components.data.data_organizer import DataOrganizer, RecipeSplit
from espnet3.components.data.dataset_builder import DatasetBuilder, run_builder
from espnet3.components.data.dataset_module import instantiate_dataset_reference, load_dataset_module
from espnet3.contract import Field
from espnet3.contract.stages import StageSpec
from espnet3.utils import config_utils, sph2pipe
from espnet3.utils.config_utils import load_and_merge_config, load_config_with_defaults, load_default_config

MINI_AN4 = resources.files("egs3.mini_an4.esp2_asr")

LOCAL_DATASET = """
import numpy as np

from espnet3.components.data.base_dataset import BaseDataset
from espnet3.contract import Field

from .words import WORDS


class Dataset(BaseDataset):
    fields = (Field("speech", "audio"), Field("text", "text"))

    def __init__(self, n, offset=0):
        self.n, self.offset = n, offset

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        value = self.offset + index
        return {"speech": np.full(value + 1, value, np.float32), "text": WORDS[value % len(WORDS)]}
"""


def _recipe(root: Path, dataset_init: str = LOCAL_DATASET) -> Path:
    """A recipe directory whose own dataset/ package defines Dataset (with a relative import)."""
    (root / "dataset").mkdir(parents=True)
    (root / "dataset" / "__init__.py").write_text(textwrap.dedent(dataset_init))
    (root / "dataset" / "words.py").write_text("WORDS = ['YES', 'NO', 'GO']\n")
    return root


def _copy_mini_an4(tmp_path: Path) -> Path:
    recipe = tmp_path / "egs3" / "mini_an4" / "esp2_asr"
    with resources.as_file(MINI_AN4) as source:
        shutil.copytree(source, recipe, ignore=shutil.ignore_patterns("__pycache__"))
    return recipe


# -- config_utils -------------------------------------------------------------------------------


def test_recipe_config_merges_over_the_template_with_its_own_file_name(tmp_path):
    conf = _copy_mini_an4(tmp_path) / "conf"
    config = load_and_merge_config(conf / "training_asr_transformer.yaml", "training.yaml")

    assert config.optimizer._target_ == "torch.optim.Adam"  # from the TEMPLATE
    assert config.optimizer.lr == 0.005  # the recipe's value
    assert config.optimizer.weight_decay == 1e-6  # TEMPLATE value the recipe leaves alone
    assert config.exp_tag == "training_asr_transformer"  # TEMPLATE's ${self_name:}, bound to the user's file
    assert config.exp_dir == "./exp/training_asr_transformer"
    assert config.optimizer._convert_ == "all"
    assert config.dataset.train[0].data_src_args.split == "train"

    publication = load_and_merge_config(conf / "publication.yaml", "publication.yaml")
    assert publication.upload_model.hf_repo == "espnet/mini_an4_esp2_asr_publication"  # ${set_corpus_and_system:}
    assert Path(publication.pack_model.readme).is_absolute()  # TEMPLATE's ${config_path:../src/...}
    assert load_and_merge_config(None, "training.yaml") is None


def test_a_config_outside_egs3_must_name_its_default_package(tmp_path):
    (tmp_path / "mine.yaml").write_text("optimizer: {lr: 0.1}\n")

    with pytest.raises(ValueError, match="pass default_package"):
        load_and_merge_config(tmp_path / "mine.yaml", "training.yaml")

    config = load_and_merge_config(tmp_path / "mine.yaml", "training.yaml", default_package="egs3.TEMPLATE.esp2_asr")
    assert config.optimizer.lr == 0.1 and config.exp_tag == "mine"


def test_default_config_is_the_packaged_file_unresolved():
    config = load_default_config("training.yaml", "egs3.TEMPLATE.esp2_asr")

    assert config.exp_tag == "training"
    assert config._get_node("exp_dir")._value() == "${recipe_dir}/exp/${exp_tag}"
    with pytest.raises(ValueError, match="has no conf/nope.yaml"):
        load_default_config("nope.yaml", "egs3.TEMPLATE.esp2_asr")


def test_defaults_lists_compose_files_groups_and_self_in_order(tmp_path):
    (tmp_path / "optim").mkdir()
    (tmp_path / "base.yaml").write_text("lr: 1\nlayers: 2\nbase_name: ${self_name:}\n")
    (tmp_path / "optim" / "adam.yaml").write_text("_target_: torch.optim.Adam\nlr: ${lr}\n")
    (tmp_path / "tokens.txt").write_text("a\n b \n")
    (tmp_path / "main.yaml").write_text(textwrap.dedent("""\
        defaults:
          - base
          - _self_
          - optim: adam
          - model: null
        lr: 0.1
        layers: 4
        name: ${self_name:}
        readme: ${config_path:../README.md}
        tokens: ${load_line:tokens.txt}
    """))

    config = load_config_with_defaults(tmp_path / "main.yaml")

    assert config.lr == 0.1 and config.layers == 4  # _self_ overrides base.yaml
    assert config.optim == {"_target_": "torch.optim.Adam", "lr": 0.1, "_convert_": "all"}
    assert "model" not in config and "defaults" not in config
    assert (config.name, config.base_name) == ("main", "base")  # each file's own stem
    assert config.readme == (tmp_path.parent / "README.md").resolve().as_posix()
    assert list(config.tokens) == ["a", "b"]

    (tmp_path / "bad.yaml").write_text("defaults: [base.yml]\n")
    with pytest.raises(ValueError, match="base.yml"):
        load_config_with_defaults(tmp_path / "bad.yaml")


def test_importing_config_utils_again_keeps_the_resolvers():
    importlib.reload(config_utils)
    from omegaconf import OmegaConf

    for name in ("load_line", "self_name", "config_path", "set_corpus_and_system"):
        assert OmegaConf.has_resolver(name)


# -- contract -----------------------------------------------------------------------------------


def test_field_and_stage_spec_take_upstreams_arguments():
    assert Field("speech", "audio").label == "Speech"
    assert Field("text", "text", "Transcription").label == "Transcription"
    with pytest.raises(ValueError, match="use one of"):
        Field("speech", "video")

    spec = StageSpec(name="pack_model", config=("training", "publication"))
    assert spec.log_dir is None
    with pytest.raises(TypeError):
        StageSpec("train", "training")  # keyword-only, as upstream
    with pytest.raises(ValueError, match="repeats a role"):
        StageSpec(name="train", config=("training", "training"))


def test_base_dataset_checks_its_first_item_against_its_fields():
    class Items(BaseDataset):
        fields = (Field("speech", "audio"), Field("text", "text"))

        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, index):
            return self.items[index]

    good = {"speech": np.zeros(3, np.float32), "text": "HI"}
    dataset = Items([good, {"speech": 1}])
    assert dataset[0] is good
    assert dataset[1] == {"speech": 1}  # only each instance's first read is checked

    with pytest.raises(ValueError, match="lacks the declared field 'text'"):
        Items([{"speech": np.zeros(3)}])[0]
    with pytest.raises(ValueError, match="'text' is declared text but holds int"):
        Items([{"speech": np.zeros(3), "text": 7}])[0]

    class Undeclared(Items):
        fields = None

    with pytest.raises(TypeError, match="does not declare fields"):
        Undeclared([good])[0]
    with pytest.raises(TypeError, match="repeats a name"):
        type("Twice", (BaseDataset,), {"fields": (Field("text", "text"), Field("text", "text"))})


# -- dataset modules, builders, splits -----------------------------------------------------------


def test_omitted_data_src_loads_the_recipes_own_dataset_package(tmp_path):
    recipe = _recipe(tmp_path / "recipe")

    dataset = instantiate_dataset_reference({"name": "dev", "data_src_args": {"n": 2, "offset": 1}}, recipe_dir=recipe)

    assert len(dataset) == 2
    assert dataset[0]["text"] == "NO" and dataset[0]["speech"].tolist() == [1.0, 1.0]
    assert load_dataset_module(recipe_dir=recipe) is load_dataset_module(recipe_dir=str(recipe))


def test_a_tag_or_module_path_names_an_installed_recipes_dataset():
    module = load_dataset_module("mini_an4/esp2_asr")

    assert module.__name__ == "egs3.mini_an4.esp2_asr.dataset"
    assert issubclass(module.Dataset, BaseDataset) and issubclass(module.DatasetBuilder, DatasetBuilder)
    assert load_dataset_module("egs3.mini_an4.esp2_asr.dataset") is module


def test_a_data_src_that_does_not_resolve_says_what_was_tried(tmp_path):
    with pytest.raises(ValueError, match=r"data_src 'nope/missing' does not resolve: tried to import "
                                         r"'egs3\.nope\.missing\.dataset'.*<corpus>/<system> tag"):
        instantiate_dataset_reference({"data_src": "nope/missing"})
    with pytest.raises(ValueError, match=r"dataset/__init__\.py does not exist"):
        instantiate_dataset_reference({}, recipe_dir=tmp_path)
    with pytest.raises(ValueError, match="set data_src .* or recipe_dir"):
        load_dataset_module()

    plain = _recipe(tmp_path / "plain", "class Dataset:\n    pass\n")
    with pytest.raises(TypeError, match="does not subclass BaseDataset"):
        instantiate_dataset_reference({}, recipe_dir=plain)


def test_run_builder_prepares_and_builds_only_what_is_missing():
    class Recorder(DatasetBuilder):
        def __init__(self, prepared, built):
            self.prepared, self.built, self.calls = prepared, built, []

        def is_source_prepared(self, **kwargs):
            return self.prepared

        def prepare_source(self, **kwargs):
            self.calls.append(("prepare_source", kwargs))

        def is_built(self, **kwargs):
            return self.built

        def build(self, **kwargs):
            self.calls.append(("build", kwargs))

    fresh = Recorder(prepared=False, built=False)
    run_builder(fresh, recipe_dir="recipe", split="train")
    assert fresh.calls == [("prepare_source", {"recipe_dir": "recipe", "split": "train"}),
                           ("build", {"recipe_dir": "recipe", "split": "train"})]
    done = Recorder(prepared=True, built=True)
    run_builder(done, recipe_dir="recipe")
    assert done.calls == []
    with pytest.raises(TypeError, match="subclass"):
        run_builder(object(), recipe_dir="recipe")


def test_recipe_split_concatenates_its_entries_and_applies_each_transform(tmp_path, monkeypatch):
    recipe = _recipe(tmp_path / "recipe")
    (tmp_path / "my_transforms.py").write_text(
        "class Lower:\n    def __call__(self, item):\n        return {**item, 'text': item['text'].lower()}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    split = RecipeSplit(
        [{"data_src_args": {"n": 2}}, {"data_src_args": {"n": 3, "offset": 1}, "transform": {"_target_": "my_transforms.Lower"}}],
        recipe_dir=recipe,
    )

    assert len(split) == 5
    assert [split[i]["text"] for i in range(5)] == ["YES", "NO", "no", "go", "yes"]
    assert split[2]["speech"].tolist() == [1.0, 1.0]
    with pytest.raises(IndexError):
        split[5]
    assert b"_espnet3_local_dataset_" not in pickle.dumps(split)  # rebuilt, not imported, where unpickled
    assert [item["text"] for item in pickle.loads(pickle.dumps(split))] == ["YES", "NO", "no", "go", "yes"]

    with pytest.raises(ValueError, match=r"unknown key\(s\) \['data_src_arg'\]"):
        RecipeSplit([{"data_src_arg": {"n": 1}}], recipe_dir=recipe)
    (tmp_path / "my_transforms.py").write_text("def drop_text(item):\n    return {'speech': item['speech']}\n")
    importlib.invalidate_caches()
    sys.modules.pop("my_transforms", None)
    with pytest.raises(ValueError, match="must give the same keys"):
        RecipeSplit([{"data_src_args": {"n": 1}},
                     {"data_src_args": {"n": 1}, "transform": {"_target_": "my_transforms.drop_text", "_partial_": True}}],
                    recipe_dir=recipe)


def test_data_organizer_is_only_a_name():
    with pytest.raises(TypeError, match="reads the `dataset:` block"):
        DataOrganizer(train=[], valid=[])


def test_the_mini_an4_recipe_builds_and_reads_through_a_recipe_split(tmp_path, monkeypatch):
    """The released recipe's own builder and Dataset, run against this package (sph2pipe included)."""
    recipe = _copy_mini_an4(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sph2pipe").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m espnet3.utils.sph2pipe "$@"\n')
    (bin_dir / "sph2pipe").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")

    split = RecipeSplit([{"data_src_args": {"split": "valid"}}, {"data_src_args": {"split": "test"}}], recipe_dir=recipe)

    assert len(split) == 3  # dev_size 1 from train, and the 2 test utterances
    item = split[1]
    assert isinstance(item["text"], str) and item["text"].isupper()
    assert item["speech"].dtype == np.float32 and len(item["speech"]) > 16000 // 2


# -- sph2pipe ------------------------------------------------------------------------------------


def test_sph2pipe_writes_the_sphere_samples_as_a_16_bit_wav(tmp_path, capsysbinary):
    with resources.as_file(MINI_AN4 / "downloads.tar.gz") as archive, tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".sph"))
        tar.extract(member, tmp_path, filter="data")
    sph = tmp_path / member.name

    assert sph2pipe.main(["-f", "wav", "-p", "-c", "1", str(sph)]) == 0
    wav = capsysbinary.readouterr().out

    assert wav[:4] == b"RIFF"
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="int16")
    expected, expected_rate = soundfile.read(sph, dtype="int16")
    assert soundfile.info(io.BytesIO(wav)).subtype == "PCM_16"
    assert rate == expected_rate == 16000
    np.testing.assert_array_equal(samples, expected)

    with pytest.raises(SystemExit) as exit_info:
        sph2pipe.main(["-c", "2", str(sph)])
    assert exit_info.value.code == 2
    assert "has 1 channel(s)" in capsysbinary.readouterr().err.decode()


# -- the release's recipes whose corpora are not here ---------------------------------------------


def _copy_release_recipe(tmp_path: Path, corpus: str) -> Path:
    recipe = tmp_path / "egs3" / corpus / "esp2_asr"
    with resources.as_file(resources.files(f"egs3.{corpus}.esp2_asr")) as source:
        shutil.copytree(source, recipe, ignore=shutil.ignore_patterns("__pycache__"))
    return recipe


def test_spgispeech_converts_with_its_own_cache_variable_and_a_typo_still_fails(tmp_path):
    """spgispeech's training config has a top-level `cache:` block that upstream's code never reads
    and its create_dataset and data_src_args interpolate (`${cache}`): the recipe's variable, kept
    out of the run, where an unknown key nobody refers to is still an error."""
    from espnet3.errors import ConfigError
    from espnet3.recipe.convert import train_yaml
    from espnet3.recipe.roles import load_roles, referenced_names

    recipe = _copy_release_recipe(tmp_path, "spgispeech")
    (config,) = (recipe / "conf" / "tuning").glob("*.yaml")
    training = load_roles({"training": config}, recipe_dir=recipe)["training"]
    assert "cache" in training.variables and "tokenizer" in training.variables
    converted = train_yaml(training)
    assert "cache" not in converted and converted["task"] == "espnet3.systems.esp2_asr.task.ASRTask"
    assert referenced_names({"a": ["${x}", "${y.z}", "${self_name:}", "${w[0]}"]}) == {"x", "y", "w"}

    config.write_text(config.read_text() + "\nchache: {enabled: false}\n")
    with pytest.raises(ConfigError, match="`chache`: not a key of an egs3 training config, nor a variable"):
        train_yaml(load_roles({"training": config}, recipe_dir=recipe)["training"])


def test_a_recipe_whose_corpus_is_missing_stops_at_create_dataset_with_the_builders_fix(tmp_path, monkeypatch,
                                                                                         capsys):
    from espnet3.systems.esp2_asr.system import ASRSystem
    from espnet3.systems.launch import run

    recipe = _copy_release_recipe(tmp_path, "librispeech_100")
    monkeypatch.chdir(recipe)
    monkeypatch.syspath_prepend(str(recipe))
    monkeypatch.delenv("LIBRISPEECH", raising=False)
    code = run(ASRSystem, ["--stages", "create_dataset", "--training_config",
                           "conf/tuning/training_e_branchformer.yaml"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "run.py: error: create_dataset: LibriSpeech source not found" in err and "set LIBRISPEECH" in err
    assert "Traceback" not in err
