"""What the container image deploy/container/Dockerfile would be, read without a Docker
engine: BuildKit's own Dockerfile parser (the `dockerfile` package) gives the
instructions; the facts the manifests must agree with (USER, CMD, EXPOSE) are taken
from its final stage.
"""
from dataclasses import dataclass, field

import dockerfile

from chart import ROOT

DOCKERFILE = ROOT / "deploy/container/Dockerfile"
DOCKERIGNORE = ROOT / "deploy/container/Dockerfile.dockerignore"


@dataclass
class Image:
    commands: list          # every instruction, in order
    final: int              # index of the final stage's FROM
    last: dict = field(default_factory=dict)  # instruction -> its last occurrence in the final stage

    @classmethod
    def parse(cls, path=DOCKERFILE):
        commands = list(dockerfile.parse_file(str(path)))
        final = max(i for i, c in enumerate(commands) if c.cmd.upper() == "FROM")
        return cls(commands, final, {c.cmd.upper(): c for c in commands[final:]})

    @property
    def stages(self):
        return [c for c in self.commands if c.cmd.upper() == "FROM"]

    @property
    def stage_names(self):
        return {c.value[2].lower() for c in self.stages if len(c.value) >= 3 and c.value[1].upper() == "AS"}

    def runs(self, final_stage):
        """The RUN commands of the final stage (True) or of the stages before it (False)."""
        part = self.commands[self.final:] if final_stage else self.commands[:self.final]
        return [c.value[0] for c in part if c.cmd.upper() == "RUN"]

    @property
    def user(self):
        """The final stage's USER as written (uid part), '' when there is none."""
        user = self.last.get("USER")
        return user.value[0].split(":")[0] if user else ""

    @property
    def uid(self):
        return int(self.user) if self.user.isdigit() else None

    @property
    def cmd(self):
        cmd = self.last.get("CMD")
        return list(cmd.value) if cmd else None

    @property
    def expose(self):
        expose = self.last.get("EXPOSE")
        return [int(p.split("/")[0]) for p in expose.value] if expose else []


def ignore_patterns(path=DOCKERIGNORE):
    """The exclusion lines of the build context's ignore file ([] when there is none)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]
