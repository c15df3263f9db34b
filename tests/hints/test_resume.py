"""Scheduler state survives a SIGKILL: a resumed run ends exactly where an uninterrupted one does."""

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent('''
    import json, os, signal, sys
    from pathlib import Path
    from hints import HintSampler, HintsConfig

    run_dir, steps, kill_after = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rows = [{"id": f"p{i}", "prompt": f"Q{i}", "answer": "1",
             "hints": [f"h{k}" for k in range(1, 6)]} for i in range(6)]
    hc = HintSampler(HintsConfig(enabled=True, lower_window=2), rows)
    start = 0
    ckpt = run_dir / "ckpt.json"
    if ckpt.exists():
        saved = json.loads(ckpt.read_text())
        start = saved["step"] + 1
        hc.scheduler.load(run_dir / "hints_state.json")
    for step in range(start, steps):
        batch = []
        for draw in hc.plan(rows, step):
            i = int(draw.id[1:])
            # prompt i is solved from level (i % 6) on, and learnt without hints after step 2*i
            ok = draw.level >= i % 6 or step > 2 * i
            batch.append((draw, [1.0 if ok and j <= step % 3 else 0.0 for j in range(4)]))
        hc.update(batch)
        hc.save(run_dir)
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": step}))
        tmp.replace(ckpt)
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    print(json.dumps(hc.state_dict()))
''')


def _run(script: Path, run_dir: Path, steps: int, kill_after: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), str(run_dir), str(steps), str(kill_after)],
                          capture_output=True, text=True, timeout=60)


def test_scheduler_state_survives_kill_and_resume(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    full = _run(script, tmp_path / "full", 12, -1)
    assert full.returncode == 0, full.stderr
    expected = json.loads(full.stdout)

    killed = _run(script, tmp_path / "killed", 12, 4)
    assert killed.returncode == -signal.SIGKILL
    saved = json.loads((tmp_path / "killed" / "hints_state.json").read_text())
    assert any(p["level"] > 0 for p in saved["prompts"].values())  # something to lose
    resumed = _run(script, tmp_path / "killed", 12, -1)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == expected
    weaned = [pid for pid, p in expected["scheduler"]["prompts"].items()
              if p["level"] == 0 and any(a[1] > 0 for a in p["history"])]
    assert weaned  # a prompt went up to a hint and back down to none
