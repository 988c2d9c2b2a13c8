"""A loaded llama.cpp model: weights and vocabulary (no context, no KV cache)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp

from candor.config import Settings
from candor.engine.cpu_selftest import CpuBuffers, choose_cpu_buffers
from candor.engine.native import ensure_backend
from candor.errors import InvalidParameter, ModelClosed, ModelLoadError, UnsupportedModel
from candor.identity import NO_KV_ARCHS


class NativeModel:
    """Owns a `llama_model*`; tokenizes and detokenizes with its vocabulary."""

    def __init__(
        self,
        path: Path,
        *,
        gpu_layers: int = -1,
        weights_in_ram: bool = False,
        cpu_buffers: CpuBuffers | None = None,
    ) -> None:
        sink = ensure_backend()
        if cpu_buffers is None:  # as CANDOR_CPU_BUFFERS says: by default, as the CPU self-test found
            settings = Settings.from_env()
            cpu_buffers = choose_cpu_buffers(settings.cpu_buffers, settings.home, threads=settings.threads)
        self.cpu_buffers = cpu_buffers
        params = llama_cpp.llama_model_default_params()
        # Extra buffer types (AMX, CPU_REPACK) hold weights in layouts for special kernels; without them
        # every CPU weight stays in a plain buffer (what llama-bench --repack 0 does).
        params.use_extra_bufts = cpu_buffers.extra
        # -1 asks for every layer: llama.cpp clamps it to what the backends can hold.
        params.n_gpu_layers = 999 if gpu_layers < 0 else gpu_layers
        # Read into allocated memory, or (llama.cpp's default) map the file: see plan/holding.py.
        mapped = llama_cpp.LLAMA_LOAD_MODE_AUTO
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE if weights_in_ram else mapped
        mark = sink.mark()
        handle = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not handle:
            errors = sink.errors_since(mark)
            reasons = "; ".join(errors[-3:]) or "no reason was logged"
            if any("unknown model architecture" in line for line in errors):
                raise UnsupportedModel(
                    f"llama.cpp (this build) cannot run {path}: {reasons}. Upgrade llama-cpp-python for a "
                    "newer llama.cpp that knows this architecture."
                )
            raise ModelLoadError(
                f"llama.cpp could not load {path}: {reasons}. If the file is damaged, download it again; "
                "if it comes from Ollama's library, get the model as a GGUF from Hugging Face instead."
            )
        self._handle: int | None = handle
        self.path = path
        self.vocab = llama_cpp.llama_model_get_vocab(handle)
        self.n_vocab: int = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train: int = llama_cpp.llama_model_n_ctx_train(handle)
        self.n_embd: int = llama_cpp.llama_model_n_embd(handle)
        self.n_swa: int = llama_cpp.llama_model_n_swa(handle)
        self.bos: int = llama_cpp.llama_vocab_bos(self.vocab)
        self.eos: int = llama_cpp.llama_vocab_eos(self.vocab)
        self.adds_bos: bool = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.has_encoder: bool = bool(llama_cpp.llama_model_has_encoder(handle))
        self.is_recurrent: bool = bool(llama_cpp.llama_model_is_recurrent(handle))
        self.is_hybrid: bool = bool(llama_cpp.llama_model_is_hybrid(handle))
        self.architecture = self._meta("general.architecture")
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)

    def _meta(self, key: str) -> str:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_model_meta_val_str(self._handle, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else ""

    def check_generates(self) -> None:
        """Raise UnsupportedModel for a model that embeds or denoises but cannot continue text: llama.cpp
        asserts (and kills the process) on a generation batch for an architecture with no KV cache."""
        if self.architecture in NO_KV_ARCHS:
            raise UnsupportedModel(
                f"{self.path.name} is a {self.architecture} model: it keeps no KV cache, so it cannot "
                "generate text; use it for embeddings (embed, /api/embed, /v1/embeddings)"
            )

    @property
    def handle(self) -> int:
        """The raw `llama_model*`; raises once the model is closed."""
        if self._handle is None:
            raise ModelClosed("this model was closed; load it again with candor.load()")
        return self._handle

    def close(self) -> None:
        """Free the weights (idempotent)."""
        if self._handle is not None:
            llama_cpp.llama_model_free(self._handle)
            self._handle = None

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        """Text -> token ids. `parse_special` turns `<start_of_turn>`-style text into control tokens."""
        self.handle  # noqa: B018 - raises when closed
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidParameter(
                "the text has a lone surrogate (\\ud800-\\udfff), which has no UTF-8 form; send valid Unicode"
            ) from None
        capacity = len(data) + 8
        while True:
            out = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), out, capacity, add_special, parse_special
            )
            if n >= 0:
                return list(out[:n])
            capacity = -n

    def piece(self, token: int) -> bytes:
        """The bytes one token stands for (control tokens render as nothing). Cached per token."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        self.handle  # noqa: B018 - raises when closed
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            data = buf.raw[:n]
        else:
            data = self._piece_buf.raw[:n]
        self._pieces[token] = data
        return data

    def token_text(self, token: int) -> str:
        """The vocabulary entry of a token, special tokens included (e.g. '<end_of_turn>')."""
        raw = llama_cpp.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    def detokenize(self, tokens: list[int]) -> str:
        """Token ids -> text, as the model's own detokenizer renders them (special tokens omitted)."""
        self.handle  # noqa: B018 - raises when closed
        if not tokens:
            return ""
        arr = (llama_cpp.llama_token * len(tokens))(*tokens)
        capacity = len(tokens) * 16 + 16
        while True:
            buf = ctypes.create_string_buffer(capacity)
            n = llama_cpp.llama_detokenize(self.vocab, arr, len(tokens), buf, capacity, False, False)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            capacity = -n

    def fim_tokens(self) -> tuple[int, int, int, int] | None:
        """The fill-in-the-middle tokens (prefix, suffix, middle, file separator or -1), or None without."""
        vocab = self.vocab
        pre, suf, mid = (
            llama_cpp.llama_vocab_fim_pre(vocab),
            llama_cpp.llama_vocab_fim_suf(vocab),
            llama_cpp.llama_vocab_fim_mid(vocab),
        )
        if min(pre, suf, mid) < 0:
            return None
        return pre, suf, mid, llama_cpp.llama_vocab_fim_sep(vocab)

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, EOT, `<end_of_turn>`...)."""
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def chat_template(self) -> str | None:
        """The model's own chat template, if the GGUF carries one."""
        raw = llama_cpp.llama_model_chat_template(self.handle, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def n_params(self) -> int:
        """Parameter count as llama.cpp counts it."""
        return int(llama_cpp.llama_model_n_params(self.handle))

    def size_bytes(self) -> int:
        """Bytes of weights."""
        return int(llama_cpp.llama_model_size(self.handle))

    def declared_pooling(self) -> int | None:
        """The pooling the GGUF declares (`{arch}.pooling_type`: 1 mean, 2 cls, 3 last, 4 rank), or None."""
        declared = self.meta(f"{self.architecture}.pooling_type")
        return int(declared) if declared and declared.lstrip("-").isdigit() else None

    def meta(self, key: str) -> str | None:
        """One GGUF metadata value as llama.cpp reads it, or None."""
        buf = ctypes.create_string_buffer(512)
        n = llama_cpp.llama_model_meta_val_str(self.handle, key.encode(), buf, 512)
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None
