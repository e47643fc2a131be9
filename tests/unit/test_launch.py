"""`neuralreg launch slurm` (populate/launch.py) writes the array job script from deploy/slurm/ without a
database: the sbatch lines the issue asks for, credentials as a 0600 folder only, the Apptainer bind
mounts with --image, bad options refused naming the problem; and the small pieces of
populate/preempt.py that need no database (the count, the scheduler's name for a worker)."""
import argparse
import subprocess

import pytest

from populate import common, launch, preempt


def _args(tmp_path, **over):
    secrets = tmp_path / "secrets"
    if not secrets.exists():
        secrets.mkdir(mode=0o700)
        for name in ("database.user", "database.password"):
            (secrets / name).write_text("x\n")
            (secrets / name).chmod(0o600)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    launch.add_parser(sub, argparse.ArgumentParser(add_help=False))
    argv = ["launch", "slurm", "--secrets", str(secrets), "--logs", str(tmp_path / "logs")]
    for k, v in over.items():
        argv += [f"--{k.replace('_', '-')}"] if v is True else [f"--{k.replace('_', '-')}={v}"]
    return parser.parse_args(argv)


def test_the_script_has_the_array_signal_requeue_logs_and_no_credentials(tmp_path):
    text = launch.render(_args(tmp_path, workers=8, max_running=2, grace=90, time="12:00:00"), "study1")
    assert "{{" not in text
    for line in ("#SBATCH --array=0-7%2", "#SBATCH --gres=gpu:1", "#SBATCH --signal=TERM@90", "#SBATCH --requeue",
                 "#SBATCH --ntasks=1", "#SBATCH --time=12:00:00", "#SBATCH --job-name=nr-study1"):
        assert line in text.splitlines(), line
    assert f"#SBATCH --output={tmp_path / 'logs'}/%x_%A_%a.log" in text
    code = [line for line in text.splitlines() if not line.startswith("# ")]          # directives and commands
    assert not any("B:TERM" in line or "--export" in line for line in code)
    assert "srun --ntasks=1" in text and "--prefix study1" in text and "--preempt-grace 20" in text
    assert 'scontrol requeue "$SLURM_JOB_ID"' in text and "75)" in text
    assert "NEURALREG_SECRETS=\"$secrets\"" in text and "DJ_PASS" not in text
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0     # valid bash


def test_cpu_partitions_idle_exit_and_the_apptainer_image(tmp_path):
    text = launch.render(_args(tmp_path, gres="none", idle_exit=60, image=tmp_path / "w.sif", sbatch="--qos=spot"),
                         "p")
    assert "--gres" not in text.split("#SBATCH --signal")[0].replace("(no --gres", "")
    assert "#SBATCH --qos=spot" in text and "--forever --idle-exit 60 --poll 15" in text
    assert "apptainer exec --nv --no-home" in text and ":/run/secrets/neuralreg:ro" in text
    assert ":/cache" in text and f"{tmp_path / 'w.sif'}" in text
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


@pytest.mark.parametrize("over, message", [
    ({"workers": 0}, "--workers 0"), ({"time": "soon"}, "not a SLURM time"), ({"mem": "lots"}, "memory size"),
    ({"grace": 0}, "--grace 0"), ({"gres": "gpu:1;rm -rf"}, "gres"), ({"sbatch": "--export=ALL,DJ_PASS=x"}, "not allowed"),
    ({"partition": "gpu;rm -rf ~"}, "--partition"), ({"partition": "gpu preempt"}, "--partition"),
    ({"partition": "gpu,"}, "--partition"), ({"logs": "my logs"}, "whitespace"),
])
def test_bad_options_are_refused_naming_them(tmp_path, over, message):
    with pytest.raises(ValueError, match=message):
        launch.render(_args(tmp_path, **over), "p")


def test_credentials_must_be_0600_files(tmp_path):
    args = _args(tmp_path)
    (tmp_path / "secrets" / "database.password").chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        launch.render(args, "p")
    (tmp_path / "secrets" / "database.password").unlink()
    with pytest.raises(ValueError, match="database.password is missing"):
        launch.render(args, "p")
    with pytest.raises(ValueError, match="no such folder"):
        launch.check_secrets(tmp_path / "nope")


def test_the_preemption_count_and_the_runner(monkeypatch):
    assert preempt.count("") == 0 and preempt.count(None) == 0 and preempt.count("ValueError: x") == 0
    assert preempt.count("Preempted 3 time(s) (limit 10); last: SIGTERM") == 3
    assert preempt.PREEMPTED_EXIT == 75 and preempt.PREEMPTED_EXIT not in (0, 1, 70, 143)
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "NEURALREG_RUNNER"):
        monkeypatch.delenv(name, raising=False)
    assert common.runner() == ""
    monkeypatch.setenv("NEURALREG_RUNNER", "pod worker-abc")
    assert common.runner() == "pod worker-abc"
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    assert common.runner() == "slurm job 12"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "10")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert common.runner() == "slurm job 12 (array 10_2)"
