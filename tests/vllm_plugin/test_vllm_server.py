"""vLLM's OpenAI-compatible server serving a tiny SpikingBrain checkpoint on 127.0.0.1: start it, ask one
completion (greedy), compare with our transformers model, stop it by its PID; bounded in time."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import torch

from vllm_testing import save_tiny_checkpoint

START_TIMEOUT = 240  # seconds for the server to answer /health
REQUEST_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status


@pytest.fixture
def server(tmp_path):
    directory = tmp_path / "checkpoint"
    model = save_tiny_checkpoint(directory)
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(directory), "--host", "127.0.0.1",
        "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "128", "--max-num-seqs", "4",
        "--gpu-memory-utilization", "0.05",  # prefix caching left at vLLM's default: the plugin turns it off
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, f"the server exited with {process.returncode}:\n{(tmp_path / 'server.log').read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no answer on /health in {START_TIMEOUT}s"
            try:
                if get(f"http://127.0.0.1:{port}/health") == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        yield f"http://127.0.0.1:{port}", str(directory), model
    finally:
        # Stop by PID: SIGTERM lets vLLM shut its engine-core process down; SIGKILL to the process group
        # this test started if it has not exited in 60 s.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.close()


def test_openai_completion_matches_transformers(server):
    url, name, model = server
    # Longer than the window (8). Words t3..t9 only: vLLM's tokenizer wrapper reads this word-level
    # vocabulary greedily, so "t10" would come back as "t1", "t0".
    prompt_ids = [3, 4, 5, 6, 7, 8, 9] * 2 + [5]
    body = {"model": name, "prompt": " ".join(f"t{i}" for i in prompt_ids), "max_tokens": 6, "temperature": 0.0}
    request = urllib.request.Request(
        f"{url}/v1/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
        answer = json.loads(response.read())
    with torch.no_grad():
        tokens = model.generate(torch.tensor([prompt_ids]), max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    expected = "".join(f"t{i}" for i in tokens[0, len(prompt_ids):].tolist())
    text = answer["choices"][0]["text"]
    assert text.replace(" ", "") == expected, (text, expected)
    assert answer["usage"]["prompt_tokens"] == len(prompt_ids)
