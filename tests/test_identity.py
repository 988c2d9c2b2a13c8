"""ModelCard: what a GGUF file really is, stated from its metadata and tensor shapes."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import gguf
import gguf_factory as gf
import pytest

from candor import identity
from candor.errors import InvalidModelFile, ModelNotFound
from candor.gguf_file import read_gguf
from candor.identity import BaseModel, ModelCard, file_sha256, format_count, read_card


def test_card_of_the_tiny_model(tiny_model_path: Path) -> None:
    card = read_card(tiny_model_path)
    written = gf.tiny_llama_tensors(300, n_layers=2, n_kv_heads=4)
    assert card.parameter_count == sum(a.size for a in written.values()) == 120_640
    assert card.parameter_label == "121K"
    assert card.architecture == "llama" and card.model_type == "model"
    assert card.name == "Tiny Llama" and card.basename == "tiny-llama" and card.finetune is None
    assert (card.file_type, card.file_type_inferred) == ("ALL_F32", False)
    assert card.tensor_types == {"F32": 21}
    assert (card.context_length, card.embedding_length, card.block_count) == (256, 64, 2)
    assert (card.head_count, card.head_count_kv, card.feed_forward_length) == (4, 4, 128)
    assert (card.vocab_size, card.tokenizer_model, card.bos_token_id, card.eos_token_id) == (
        300,
        "llama",
        1,
        2,
    )
    assert card.chat_template is None and card.license is None and card.base_models == ()
    assert card.special_tokens_present == {}
    assert card.file_size == tiny_model_path.stat().st_size and card.gguf_version == 3


def test_quantized_card(tmp_path: Path) -> None:
    card = read_card(gf.write_tiny_llama(tmp_path / "q.gguf", tensor_type="Q8_0", n_kv_heads=2))
    assert card.tensor_types == {"Q8_0": 16, "F32": 5}
    assert (card.file_type, card.file_type_inferred, card.head_count_kv) == ("Q8_0", False, 2)
    assert card.parameter_count == sum(a.size for a in gf.tiny_llama_tensors(300, 2, 2).values())


def test_file_type_is_inferred_when_absent(tmp_path: Path) -> None:
    card = read_card(gf.write_tiny_llama(tmp_path / "m.gguf", tensor_type="F16", write_file_type=False))
    assert (card.file_type, card.file_type_inferred) == ("F16", True)
    assert "F16 (inferred)" in card.summary()


def test_unknown_file_type_is_named_as_unknown(tmp_path: Path) -> None:
    path = gf.write_tiny_llama(
        tmp_path / "m.gguf",
        write_file_type=False,
        extra_metadata={"general.file_type": (999, gguf.GGUFValueType.UINT32)},
    )
    assert read_card(path).file_type == "unknown file type 999"


def test_licence_tags_and_template(tmp_path: Path) -> None:
    path = gf.write_tiny_llama(
        tmp_path / "m.gguf",
        license="other",
        license_name="tiny-licence",
        license_link="https://example.org/l",
        tags=["text-generation", "tiny"],
        chat_template="{{ messages }}",
    )
    card = read_card(path)
    assert (card.license, card.license_name, card.license_link) == (
        "other",
        "tiny-licence",
        "https://example.org/l",
    )
    assert card.tags == ("text-generation", "tiny")
    assert card.chat_template == "{{ messages }}"
    assert "chat template" in card.summary() and "no chat template" not in card.summary()


def test_a_distill_is_never_presented_as_its_base(tmp_path: Path) -> None:
    path = gf.write_tiny_llama(
        tmp_path / "d.gguf",
        arch="qwen2",
        name="DeepSeek R1 Distill Qwen 32B",
        basename="DeepSeek-R1-Distill-Qwen",
        finetune="Distill",
        size_label="32B",
        base_models=[
            {
                "name": "Qwen2.5 32B",
                "organization": "Qwen",
                "repo_url": "https://huggingface.co/Qwen/Qwen2.5-32B",
            }
        ],
    )
    card = read_card(path)
    assert card.is_distill and card.is_finetune
    assert card.lineage() == "DeepSeek-R1-Distill-Qwen-32B is a qwen2 121K finetune (distill) of Qwen2.5 32B"
    assert card.size_label == "32B" and card.parameter_label == "121K"  # the tensors, not the label, count
    assert card.base_models == (
        BaseModel("Qwen2.5 32B", "Qwen", None, "https://huggingface.co/Qwen/Qwen2.5-32B"),
    )
    assert "distill of Qwen2.5 32B" in card.summary()


def test_distill_detected_from_the_name_alone(tmp_path: Path) -> None:
    card = read_card(gf.write_tiny_llama(tmp_path / "d.gguf", name="Some Distilled Model", basename=None))
    assert card.is_distill
    assert (
        card.lineage()
        == "Some-Distilled-Model is a llama 121K finetune (distill) of a base model the file does not name"
    )


def test_finetune_with_several_base_models(tmp_path: Path) -> None:
    bases = [{"name": "Alpha 7B"}, {"repo_url": "https://example.org/beta"}, {"organization": "Gamma"}]
    card = read_card(
        gf.write_tiny_llama(tmp_path / "f.gguf", name="Merge", finetune="Instruct", base_models=bases)
    )
    assert [b.label() for b in card.base_models] == ["Alpha 7B", "https://example.org/beta", "Gamma"]
    assert card.lineage() == (
        "Merge is a llama 121K finetune (instruct) of Alpha 7B, https://example.org/beta and Gamma"
    )


def test_a_base_model_says_so(tiny_model_path: Path) -> None:
    card = read_card(tiny_model_path)
    assert not card.is_finetune and not card.is_distill
    assert card.lineage() == (
        "Tiny-Llama is a llama 121K base model, not a finetune (the file names no finetune and no base model)"
    )
    assert card.summary() == (
        "Tiny-Llama: llama, 121K parameters, ALL_F32, 0.5 MB, context 256, vocab 300, "
        "base model, no chat template"
    )


def test_huge_base_model_count_is_not_looped_on(tmp_path: Path) -> None:
    extra = {"general.base_model.count": (2**62, gguf.GGUFValueType.UINT64)}
    card = read_card(gf.write_tiny_llama(tmp_path / "m.gguf", extra_metadata=extra))
    assert card.base_models == () and not card.is_finetune


def test_display_name_falls_back(tmp_path: Path) -> None:
    header = read_gguf(gf.write_tiny_llama(tmp_path / "x.gguf", name=" ", basename="tiny", size_label="1K"))
    assert ModelCard.from_header(header).display_name == "tiny-1K"


def test_special_tokens_present(tmp_path: Path) -> None:
    path = gf.write_tiny_llama(tmp_path / "c.gguf", extra_tokens=["<|im_start|>", "<|im_end|>", "<other>"])
    assert read_card(path).special_tokens_present == {"<|im_start|>": 300, "<|im_end|>": 301}


def test_to_dict_is_json(tmp_path: Path) -> None:
    path = gf.write_tiny_llama(
        tmp_path / "m.gguf",
        chat_template="{{ x }}",
        tags=["a"],
        base_models=[{"name": "Base"}],
        finetune="Chat",
    )
    data = json.loads(json.dumps(read_card(path).to_dict()))
    assert data["path"] == str(path) and data["architecture"] == "llama"
    assert data["base_models"] == [{"name": "Base", "organization": None, "version": None, "repo_url": None}]
    assert data["lineage"].endswith("finetune (chat) of Base")
    assert data["metadata"]["tokenizer.ggml.tokens"] == {"array_of": "string", "length": 300}
    assert data["metadata"]["llama.block_count"] == 2 and data["metadata"]["general.tags"] == ["a"]
    assert "tokenizer.chat_template" not in data["metadata"] and data["chat_template"] == "{{ x }}"


def test_file_type_names_match_gguf_package() -> None:
    for member in gguf.LlamaFileType:
        if member.name != "GUESSED":
            assert identity.FILE_TYPES[member.value] == member.name.removeprefix("MOSTLY_")


@pytest.mark.parametrize(
    ("count", "label"),
    [
        (0, "0"),
        (999, "999"),
        (1000, "1K"),
        (120_640, "121K"),
        (268_098_176, "268M"),
        (32_763_876_352, "32.8B"),
        (999_950_000, "1B"),
        (7_241_732_096, "7.24B"),
        (1_500_000_000_000, "1.5T"),
    ],
)
def test_format_count(count: int, label: str) -> None:
    assert format_count(count) == label


def test_read_card_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        read_card(tmp_path / "missing.gguf")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidModelFile, match="not a GGUF file"):
        read_card(tmp_path / "notes.txt")


def test_sha256_is_cached_and_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, cache_dir = tmp_path / "m.bin", tmp_path / "cache"
    model.write_bytes(b"first version")
    expected = hashlib.sha256(b"first version").hexdigest()
    assert file_sha256(model, cache_dir) == expected
    cache = json.loads((cache_dir / identity.SHA256_CACHE_FILE).read_text())
    assert cache[str(model.resolve())]["sha256"] == expected

    def no_hashing(path: Path) -> str:
        raise AssertionError("hashed again although the file did not change")

    with monkeypatch.context() as patch:
        patch.setattr(identity, "_hash_file", no_hashing)
        assert file_sha256(model, cache_dir) == expected

    model.write_bytes(b"second version")
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert file_sha256(model, cache_dir) == hashlib.sha256(b"second version").hexdigest()
    assert sorted(p.name for p in cache_dir.iterdir()) == [identity.SHA256_CACHE_FILE]  # no temp files left


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '{"x": 1}', ""])
def test_corrupt_sha256_cache_is_ignored_and_rewritten(tmp_path: Path, garbage: str) -> None:
    model, cache_dir = tmp_path / "m.bin", tmp_path / "cache"
    model.write_bytes(b"data")
    cache_dir.mkdir()
    (cache_dir / identity.SHA256_CACHE_FILE).write_text(garbage)
    assert file_sha256(model, cache_dir) == hashlib.sha256(b"data").hexdigest()
    assert str(model.resolve()) in json.loads((cache_dir / identity.SHA256_CACHE_FILE).read_text())


def test_sha256_of_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        file_sha256(tmp_path / "missing.gguf", tmp_path / "cache")


@pytest.mark.integration
def test_card_of_the_default_model(default_model_path: Path) -> None:
    started = time.perf_counter()
    card = read_card(default_model_path)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"read_card took {elapsed:.2f} s"
    assert card.architecture == "gemma3"
    assert (card.file_type, card.file_type_inferred) == ("Q4_K_M", False)
    assert card.vocab_size == 262_144 and card.block_count == 18
    assert card.parameter_count == sum(t.n_elements for t in read_gguf(default_model_path).tensors)
    assert 260_000_000 <= card.parameter_count <= 280_000_000
    assert "<start_of_turn>" in card.special_tokens_present and "<end_of_turn>" in card.special_tokens_present
    assert card.chat_template is None
    assert card.license == "gemma"
    assert card.lineage().startswith("Gemma-3-270m is a gemma3 268M base model")
