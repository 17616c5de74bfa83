"""`make push` / `make pull` with DVC_REMOTE against real servers on 127.0.0.1 (moto's S3 API, an
asyncssh SFTP server): a teammate's fresh clone pulls and `dvc repro` executes no stage; the
project's DVC config files stay byte for byte as they were, whatever fails; an empty remote is
no error, a broken one is one message and a non-zero exit."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.data import QUICK_TRAIN, REPO
from helpers.data import write_tiny_project as write_project
from helpers.errors import assert_user_error
from helpers.project import commit_all, dvc, edit_params, fresh_clone, init_pipeline_repo, ran
from helpers.servers import free_port

from digitpipe.core.errors import DigitpipeError
from digitpipe.remote import ONE_OFF, Remote, resolve

pytestmark = pytest.mark.skipif(not shutil.which("make"), reason="needs make")

VENV = Path(sys.executable).parent.parent
BUCKET = "digitpipe"
CONFIG_FILES = ("config", "config.local")


CONFIGURED = {"team": {"url": "s3://bucket/digitpipe/", "endpointurl": "http://minio:9000"}}


@pytest.mark.parametrize(
    ("wanted", "name", "url"),
    [
        (None, "team", "s3://bucket/digitpipe/"),  # the default remote
        ("TEAM", "team", "s3://bucket/digitpipe/"),  # a name (DVC lowercases them)
        ("s3://bucket/digitpipe", "team", "s3://bucket/digitpipe"),  # its URL: its options
        ("s3://bucket/elsewhere", ONE_OFF, "s3://bucket/elsewhere"),
        ("shared", ONE_OFF, os.path.abspath("shared")),  # a folder, from here
    ],
)
def test_what_dvc_remote_names(wanted, name, url):
    assert resolve(CONFIGURED, "team", wanted) == Remote(name, url)


def test_no_remote_at_all_is_refused():
    with pytest.raises(DigitpipeError, match="DVC_REMOTE="):
        resolve({}, None, None)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 API server on 127.0.0.1, with the bucket BUCKET."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        endpoint = "http://{}:{}".format(*server.get_host_and_port())
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


@dataclass(frozen=True)
class Sftp:
    port: int
    home: Path  # a HOME whose ~/.ssh holds the client key and trusts the server's host key

    def url(self, folder: Path) -> str:
        return f"ssh://127.0.0.1:{self.port}{folder}"


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory):
    """An asyncssh SFTP server on 127.0.0.1 serving this machine's files to one client key."""
    import asyncssh

    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def listen():
        return await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(
                client_key.export_public_key().decode()
            ),
            sftp_factory=True,
        )

    server = asyncio.run_coroutine_threadsafe(listen(), loop).result(30)
    try:
        port = server.sockets[0].getsockname()[1]
        home = tmp_path_factory.mktemp("ssh-home")
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700)
        client_key.write_private_key(ssh / "id_ed25519")
        (ssh / "id_ed25519").chmod(0o600)
        known = f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}"
        (ssh / "known_hosts").write_text(known)
        yield Sftp(port, home)
    finally:
        server.close()
        asyncio.run_coroutine_threadsafe(server.wait_closed(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def s3_env(endpoint: str) -> dict[str, str]:
    """The environment a CI job gives make for an S3-compatible store: credentials (they come
    before any in ~/.aws) and the endpoint."""
    return {
        **os.environ,
        "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }


def ssh_env(sftp: Sftp) -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}"} | {
        "HOME": str(sftp.home)
    }


def make(project: Path, target: str, remote: str, env: dict[str, str]):
    """`make TARGET DVC_REMOTE=remote` with the project's own Makefile and this .venv (-o: its
    install stamp counts as done), SHELL unset as in CI."""
    env = {key: value for key, value in env.items() if key != "SHELL"}
    command = ["make", f"VENV={VENV}", "-o", f"{VENV}/.installed", target, f"DVC_REMOTE={remote}"]
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


def succeeds(project: Path, target: str, remote: str, env: dict[str, str]) -> str:
    result = make(project, target, remote, env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def fails(project: Path, target: str, remote: str, env: dict[str, str]) -> str:
    """The stderr of a failed make target: one error message, no traceback (make exits 2 when a
    recipe fails, whatever the recipe's status)."""
    return assert_user_error(make(project, target, remote, env))


def dvc_config(project: Path) -> dict[str, bytes | None]:
    """The project's DVC config files, byte for byte (None: absent)."""
    files = {name: project / ".dvc" / name for name in CONFIG_FILES}
    return {name: path.read_bytes() if path.exists() else None for name, path in files.items()}


@pytest.fixture()
def small_repo(tmp_path) -> Path:
    """A git + DVC repo with one DVC-tracked file and the project's Makefile, committed."""
    project = tmp_path / "project"
    project.mkdir()
    env = {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    dvc(project, env, "init", "-q")
    shutil.copy(REPO / "Makefile", project)
    (project / "digits.csv").write_text("label,pixel0\n7,255\n")
    dvc(project, env, "add", "-q", "digits.csv")
    commit_all(project)
    return project


def test_s3_push_and_a_fresh_clone_pull_write_no_config(small_repo, s3_endpoint):
    env, url = s3_env(s3_endpoint), f"s3://{BUCKET}/small"
    before = dvc_config(small_repo)
    assert "1 file pushed" in succeeds(small_repo, "push", url, env)
    assert dvc_config(small_repo) == before
    clone = fresh_clone(small_repo, small_repo.parent / "clone")
    cloned = dvc_config(clone)
    assert "1 file fetched" in succeeds(clone, "pull", url, env)
    assert (clone / "digits.csv").read_text() == "label,pixel0\n7,255\n"
    assert dvc_config(clone) == cloned


def test_a_failed_push_changes_no_config(small_repo, s3_endpoint):
    # A clone that already has a local config (its default remote) keeps it byte for byte.
    local = small_repo / ".dvc" / "config.local"
    local.write_text("[core]\n    remote = shared\n['remote \"shared\"']\n    url = /nowhere\n")
    before = dvc_config(small_repo)
    env = s3_env(s3_endpoint)
    missing = fails(small_repo, "push", "s3://no-such-bucket/x", env)
    assert "no-such-bucket, which does not exist" in missing
    assert dvc_config(small_repo) == before
    # No server answers on the endpoint (AWS_MAX_ATTEMPTS=1: botocore would retry 4 times).
    stopped = s3_env(f"http://127.0.0.1:{free_port()}") | {"AWS_MAX_ATTEMPTS": "1"}
    unreachable = fails(small_repo, "push", f"s3://{BUCKET}/x", stopped)
    assert "cannot use the DVC remote s3://digitpipe/x" in unreachable
    assert dvc_config(small_repo) == before


def test_options_set_for_the_remote_are_kept(small_repo, s3_endpoint):
    """The clone's own remote with that URL gives its options: here the endpoint of an
    S3-compatible store, with AWS_ENDPOINT_URL pointing where no server answers."""
    url = f"s3://{BUCKET}/own-endpoint"
    local = small_repo / ".dvc" / "config.local"
    local.write_text(f"['remote \"env\"']\n    url = {url}\n    endpointurl = {s3_endpoint}\n")
    before = dvc_config(small_repo)
    env = s3_env(f"http://127.0.0.1:{free_port()}") | {"AWS_MAX_ATTEMPTS": "1"}
    assert f"{url}: 1 file pushed" in succeeds(small_repo, "push", url, env)
    assert dvc_config(small_repo) == before


def test_an_empty_remote_pulls_nothing_and_succeeds(small_repo, s3_endpoint):
    """A first scheduled run: a fresh clone, a remote nobody pushed to yet."""
    clone = fresh_clone(small_repo, small_repo.parent / "clone")
    out = succeeds(clone, "pull", f"s3://{BUCKET}/never-pushed", s3_env(s3_endpoint))
    assert "empty, nothing to pull" in out
    assert not (clone / "digits.csv").exists()


def test_a_missing_plugin_fails_the_pull(small_repo, s3_endpoint, tmp_path):
    # A clone whose environment lacks dvc-s3: its import fails, as it would uninstalled.
    shadow = tmp_path / "no-plugin" / "dvc_s3"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named dvc_s3')\n")
    env = s3_env(s3_endpoint)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shadow.parent), env.get("PYTHONPATH")]))
    message = fails(small_repo, "pull", f"s3://{BUCKET}/small", env)
    assert "dvc-s3" in message and "make install" in message


def test_a_wrong_ssh_key_fails_the_pull(small_repo, sftp_server, tmp_path):
    stranger = tmp_path / "stranger"
    (stranger / ".ssh").mkdir(parents=True)
    shutil.copy(sftp_server.home / ".ssh" / "known_hosts", stranger / ".ssh")
    import asyncssh

    asyncssh.generate_private_key("ssh-ed25519").write_private_key(stranger / ".ssh/id_ed25519")
    env = ssh_env(sftp_server) | {"HOME": str(stranger)}
    message = fails(small_repo, "pull", sftp_server.url(tmp_path / "store"), env)
    assert "cannot use the DVC remote ssh://" in message


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, mnist_train):
    """The tiny pipeline, reproduced once, with the project's Makefile, committed."""
    project = write_project(tmp_path_factory.mktemp("pipeline") / "project", mnist_train)
    edit_params(project, "train", **QUICK_TRAIN)
    env = init_pipeline_repo(project)
    shutil.copy(REPO / "Makefile", project)
    assert ran(dvc(project, env, "repro")) != []
    commit_all(project)
    return project, env


def teammate_runs_nothing(pipeline, url: str, env: dict[str, str]) -> None:
    project, pipeline_env = pipeline
    env = env | {"PYTHONPATH": pipeline_env["PYTHONPATH"]}
    before = dvc_config(project)
    succeeds(project, "push", url, env)
    assert dvc_config(project) == before
    clone = fresh_clone(project, project.parent / url.split(":")[0])
    cloned = dvc_config(clone)
    clone_env = env | {"PYTHONPATH": str(clone / "src")}
    succeeds(clone, "pull", url, clone_env)
    assert dvc_config(clone) == cloned
    repro = dvc(clone, clone_env, "repro")
    assert ran(repro) == [], repro
    assert (clone / "reports/report.html").read_bytes() == (
        project / "reports/report.html"
    ).read_bytes()
    shutil.rmtree(clone)


@pytest.mark.slow
def test_s3_a_teammates_clone_pulls_and_runs_no_stage(pipeline, s3_endpoint):
    teammate_runs_nothing(pipeline, f"s3://{BUCKET}/pipeline", s3_env(s3_endpoint))


@pytest.mark.slow
def test_ssh_a_teammates_clone_pulls_and_runs_no_stage(pipeline, sftp_server, tmp_path):
    teammate_runs_nothing(pipeline, sftp_server.url(tmp_path / "store"), ssh_env(sftp_server))
