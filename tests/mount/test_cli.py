"""The memfs command line: mount errors, umount, --help, stale mounts."""
import os
import signal
import time

import pytest

from memfs.mounts import is_memfs_mount, runtime_paths

from .conftest import memfs


@pytest.mark.parametrize("verb", ["mount", "umount", "ctl", "exec"])
def test_every_command_has_help(verb):
    r = memfs(verb, "--help")
    assert verb in r.stdout and "usage" in r.stdout.lower()


def test_bad_config_is_refused_before_anything_mounts(tmp_path):
    cfg = tmp_path / "bad.yaml"
    text = open(os.path.join(os.path.dirname(__file__), "../../config/small.yaml")).read()
    cfg.write_text(text.replace("type: ram}                        # up to 64 MiB",
                                "type: ram, colour: red}"))
    mnt = tmp_path / "mnt"
    r = memfs("mount", mnt, "--config", cfg, check=False)
    assert r.returncode == 2
    assert "memory_map[5].colour" in r.stderr and "unknown key" in r.stderr, r.stderr
    assert not is_memfs_mount(str(mnt))


def test_mount_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "mnt").mkdir()
    (tmp_path / "mnt" / "x").write_text("x")
    r = memfs("mount", tmp_path / "mnt", "--config", "small", check=False)
    assert r.returncode == 1 and "not empty" in r.stderr


def test_umount_of_something_not_mounted_fails(tmp_path):
    r = memfs("umount", tmp_path, check=False)
    assert r.returncode == 1 and "not mounted" in r.stderr


def test_umount_stops_the_daemon(tmp_path):
    mnt = tmp_path / "mnt"
    memfs("mount", mnt, "--config", "small")
    pid = int(runtime_paths(str(mnt))[1].read_text())
    memfs("umount", mnt)
    assert not is_memfs_mount(str(mnt))
    assert not os.path.exists(f"/proc/{pid}") or \
        open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"


def test_mount_clears_a_stale_mount_left_by_a_killed_daemon(tmp_path):
    mnt = tmp_path / "mnt"
    memfs("mount", mnt, "--config", "small")
    pid = int(runtime_paths(str(mnt))[1].read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    with pytest.raises(OSError):
        os.stat(mnt / "meminfo")
    try:
        r = memfs("mount", mnt, "--config", "small")
        assert "stale" in r.stderr
        assert (mnt / "meminfo").read_text().startswith("MemTotal:")
    finally:
        memfs("umount", mnt, check=False)
