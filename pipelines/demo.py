"""The demo repository a new installation starts with."""

from __future__ import annotations

import subprocess
from pathlib import Path

DEMO_PIPELINE = """\
# The demo pipeline: edit it, commit, and watch the new run start.
stages: [build, test, deploy]

variables:
  GREETING: "Hello from Slipway"

compile:
  stage: build
  script:
    - echo "$GREETING, building commit $SLIPWAY_COMMIT_SHORT_SHA"
    - mkdir -p dist
    - for i in 1 2 3 4 5; do echo "compiling module $i/5"; sleep 0.4; done
    - echo "built at $(date -u)" > dist/app.txt
  artifacts:
    paths: [dist/]

lint:
  stage: build
  script:
    - echo "checking style"
    - printf '\\033[32mall files formatted\\033[0m\\n'

unit-tests:
  stage: test
  needs: [compile]
  parallel:
    matrix:
      - SHARD: ["1", "2"]
  script:
    - cat dist/app.txt
    - 'for t in 1 2 3 4 5 6; do echo "shard $SHARD: test_$t ... ok"; sleep 0.3; done'

integration:
  stage: test
  script:
    - echo "starting integration suite"
    - sleep 2
    - echo "3 passed"

package:
  stage: deploy
  script:
    - tar czf app.tgz dist
    - ls -l app.tgz
  artifacts:
    paths: [app.tgz]

release:
  stage: deploy
  when: manual
  script:
    - echo "releasing $SLIPWAY_COMMIT_SHORT_SHA"
"""

README = """# Slipway demo

A small repository made by Slipway's first start. Commit to it and push nothing:
Slipway polls it, or trigger a run from the dashboard.
"""


def _git(path: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(path), *args],
        check=True,
        capture_output=True,
        env={
            "GIT_AUTHOR_NAME": "Slipway Demo",
            "GIT_AUTHOR_EMAIL": "demo@slipway.local",
            "GIT_COMMITTER_NAME": "Slipway Demo",
            "GIT_COMMITTER_EMAIL": "demo@slipway.local",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(path),
        },
    )


def create_demo_repository(path: Path) -> Path:
    """Create (once) a local git repository with a demo `.slipway.yml`."""
    if (path / ".git").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "-q", "-b", "main")
    (path / ".slipway.yml").write_text(DEMO_PIPELINE)
    (path / "README.md").write_text(README)
    _git(path, "add", ".")
    _git(path, "commit", "-q", "-m", "Add the demo pipeline")
    return path
