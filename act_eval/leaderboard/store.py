"""Accepted submissions under ``<root>/submissions/<id>/``, and the one way in: :meth:`Store.submit`.

A submission is copied once, into a private temporary directory, and verified there (so what
is checked is exactly what is stored, even if the source changes meanwhile). Only when every
check has passed is it copied into ``<root>/submissions/.incoming-*`` and renamed to its id in
one step; a refusal or a crash leaves ``<root>`` as it was (a killed copy leaves at most a
``.incoming-*`` directory, which nothing reads).

Besides :mod:`.verify`'s own checks, the store refuses

``duplicate``  samples identical to an accepted submission's, or an accepted submission of the
               same model and configuration (arm, head map, threshold, beta or factor, shots) that shares a task;
``pairing``    documents (and, between baseline and ACT, prompts) that differ from an accepted
               submission of the same model on a shared task: the board could not compare them;
``baseline``   ``--baseline`` naming a run that is not a baseline of the same model.

The stored copy is the submission as data (:func:`stored_runs`): each results file under
``<model>/`` (ICL: ``seed_<S>/<model>/``) whatever lm-eval named its folder (often a local path),
its samples files beside it gzip-compressed, and the manifest's ``runs`` pointing there. The
fingerprint, and so the id, is over the samples' uncompressed bytes: the same in either form.
:meth:`Store.reverify` runs every check again on what is stored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from act_eval import __version__
from act_eval.files import atomic_write_text
from act_eval.leaderboard import SUBMISSIONS, SubmissionError
from act_eval.leaderboard.manifest import (
    HEAD_MAP_FILE,
    MANIFEST,
    Manifest,
    read_manifest,
)
from act_eval.leaderboard.verify import Checked, TaskInfo, verify_submission
from act_eval.lm.runs import Run, check_paired, compress_samples, load_run, read_task_samples

RECORD = "record.json"  # written by the store: id, fingerprint, acceptance date, per-task facts


@dataclass(frozen=True)
class Accepted:
    """A submission on the board (or about to be)."""

    id: str
    path: Path
    manifest: Manifest
    tasks: dict[str, TaskInfo]
    fingerprint: str
    accepted: str
    verified_by: str
    runs: tuple[Run, ...]
    report: tuple[str, ...] = ()  # what verification checked (fresh verifications only, not kept in the record)

    def record(self) -> dict:
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "accepted": self.accepted,
            "verified_by": self.verified_by,
            "tasks": {task: asdict(info) for task, info in self.tasks.items()},
        }


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / SUBMISSIONS

    def accepted(self) -> list[Accepted]:
        """Every accepted submission, by id (directories starting with '.' are work in progress)."""
        if not self.dir.is_dir():
            return []
        return [_read_accepted(p) for p in sorted(self.dir.iterdir()) if p.is_dir() and not p.name.startswith(".")]

    def submit(self, run_dir: Path, baseline: Path | None = None, *, dry_run: bool = False) -> list[Accepted]:
        """Verify ``run_dir`` (and ``baseline``, its pair) and accept them together or not at all.

        A ``baseline`` already on the board (identical samples) is not accepted again. With
        ``dry_run`` every check runs and nothing is written.
        """
        sources = ([baseline] if baseline else []) + [run_dir]
        with tempfile.TemporaryDirectory(prefix="act-eval-submit-") as tmp:
            staged = {Path(tmp) / str(i): Path(source) for i, source in enumerate(sources)}
            try:
                return self._accept(staged, baseline is not None, dry_run)
            except SubmissionError as err:  # name the user's files, not the private copies
                problem = err.problem
                for copy, source in staged.items():
                    problem = problem.replace(str(copy), str(source))
                raise SubmissionError(err.check, problem) from None

    def _accept(self, staged: dict[Path, Path], paired: bool, dry_run: bool) -> list[Accepted]:
        """Copy each source to its private place, verify it there, check it against the board, commit."""
        candidates = []
        for copy, source in staged.items():
            _stage(source, copy)
            candidates.append(_candidate(verify_submission(copy)))
        board = self.accepted()
        if paired:
            _check_baseline(candidates[0], candidates[1])
            if any(a.fingerprint == candidates[0].fingerprint for a in board):
                candidates.pop(0)
        new: list[Accepted] = []
        for candidate in candidates:
            _check_duplicate(candidate, board + new)
            _check_pairing(candidate, board + new)
            new.append(candidate)
        if dry_run:
            return new
        created = not self.dir.exists()
        committed: list[Path] = []
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for candidate in new:
                committed.append(self._commit(candidate))
        except BaseException:  # a pair goes in together or not at all
            for path in committed:
                shutil.rmtree(path, ignore_errors=True)
            if created and self.dir.is_dir() and not any(self.dir.iterdir()):
                self.dir.rmdir()
            raise
        return [replace(_read_accepted(path), report=c.report) for path, c in zip(committed, new, strict=True)]

    def reverify(self, ids: Sequence[str] = ()) -> list[tuple[Accepted, SubmissionError | None]]:
        """Run every check again on accepted submissions (all, or those named), in place, writing nothing.

        Each must still pass :func:`.verify.verify_submission`, give its stored id and fingerprint
        from its samples as stored, and pass the duplicate and pairing checks against the others.
        Returns each submission (its ``report`` filled) with None, or with the refusal.
        """
        board = self.accepted()
        unknown = sorted(set(ids) - {a.id for a in board})
        if unknown:
            raise SubmissionError("record", f"no accepted submission {', '.join(unknown)} in {self.dir}")
        outcome: list[tuple[Accepted, SubmissionError | None]] = []
        for accepted in (a for a in board if not ids or a.id in ids):
            try:
                again = _candidate(verify_submission(accepted.path))
                for what, stored, now in (
                    ("directory", accepted.path.name, accepted.id),
                    ("id", accepted.id, again.id),
                    ("fingerprint", accepted.fingerprint, again.fingerprint),
                    ("tasks", accepted.tasks, again.tasks),
                ):
                    if stored != now:
                        raise SubmissionError(
                            "record", f"{accepted.id}: the record says {what} {stored}, the samples give {now}"
                        )
                others = [a for a in board if a.id != accepted.id]
                _check_duplicate(again, others)
                _check_pairing(again, others)
                outcome.append((replace(accepted, report=again.report), None))
            except SubmissionError as err:
                outcome.append((accepted, err))
        return outcome

    def _commit(self, candidate: Accepted) -> Path:
        """Copy into a hidden directory beside the final one, then rename: the submission appears whole or not at all."""
        final = self.dir / candidate.id
        incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.dir))
        try:
            incoming.chmod(0o755)  # mkdtemp's 0700 would make the accepted submission private
            shutil.copytree(candidate.path, incoming, dirs_exist_ok=True)
            (incoming / RECORD).write_text(json.dumps(candidate.record(), indent=2) + "\n", encoding="utf-8")
            os.rename(incoming, final)  # fails if another submit took the id meanwhile
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        return final


def submission_id(manifest: Manifest, fingerprint: str) -> str:
    """``<model>.<arm>.<suite>.<8 hex of the fingerprint>``: readable, and unique per set of outputs."""
    act = f"act-{manifest.head_map.name}" if manifest.head_map else "act"
    arm = {
        "baseline": "baseline",
        "act": act,
        "icl": f"icl-{manifest.fewshot.num_fewshot}shot",
        "contextual": f"{act}+contextual-cal" if manifest.head_map else "contextual-cal",
        "batch": f"{act}+batch-cal" if manifest.head_map else "batch-cal",
        "first_token": f"first-token-{manifest.head_map.name}" if manifest.head_map else "first-token",
    }[manifest.arm]
    slug = re.sub(r"[^a-z0-9._-]+", "-", f"{manifest.model.name}.{arm}".lower())
    return f"{slug}.{manifest.suite}.{fingerprint.removeprefix('sha256:')[:8]}"


def _candidate(checked: Checked) -> Accepted:
    return Accepted(
        id=submission_id(checked.manifest, checked.fingerprint),
        path=checked.path,
        manifest=checked.manifest,
        tasks=checked.tasks,
        fingerprint=checked.fingerprint,
        accepted=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        verified_by=f"act-eval {__version__}",
        runs=checked.runs,
        report=checked.report,
    )


def _read_accepted(path: Path) -> Accepted:
    manifest = read_manifest(path)
    record = json.loads((path / RECORD).read_text(encoding="utf-8"))
    return Accepted(
        id=record["id"],
        path=path,
        manifest=manifest,
        tasks={task: TaskInfo(**info) for task, info in record["tasks"].items()},
        fingerprint=record["fingerprint"],
        accepted=record["accepted"],
        verified_by=record["verified_by"],
        runs=tuple(load_run(file) for file in manifest.run_files(path)),
    )


def stored_runs(manifest: Manifest) -> tuple[str, ...]:
    """Where the store keeps each listed run: ``<model>/results_<date>.json``, for ICL ``seed_<S>/<model>/...``.

    ``<model>`` is the model's short name (``SmolLM2-135M-Instruct``), not the folder lm-eval
    named after ``pretrained`` (for a local checkpoint, a path of the submitter's machine).
    """
    model = re.sub(r"[^A-Za-z0-9._-]+", "-", manifest.model.name)
    return tuple(
        str(PurePosixPath(f"seed_{seed}" if manifest.arm == "icl" else "", model, PurePosixPath(rel).name))
        for rel, seed in zip(manifest.runs, manifest.fewshot.seeds, strict=True)
    )


def _stage(source: Path, target: Path) -> None:
    """Copy the submission as the store keeps it: head map, results in :func:`stored_runs`' layout, samples compressed.

    The manifest's ``runs`` are rewritten to the new places; what is missing or unreadable is verify's to name.
    """
    manifest = read_manifest(source)  # a malformed manifest is refused before anything is copied
    target.mkdir(parents=True)
    if (source / HEAD_MAP_FILE).is_file():
        shutil.copyfile(source / HEAD_MAP_FILE, target / HEAD_MAP_FILE)
    stored = stored_runs(manifest)
    if len(set(stored)) != len(stored):
        twice = next(p for p in stored if stored.count(p) > 1)
        raise SubmissionError("results", f"two runs would be stored as {twice}: they repeat a few-shot seed and date")
    for rel, new in zip(manifest.runs, stored, strict=True):
        results = source / rel
        if not results.is_file():
            raise SubmissionError("results", f"the manifest lists {rel}, which is not in {source}")
        (target / new).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(results, target / new)
        try:
            run = load_run(results)
        except ValueError:
            continue
        for task in run.tasks:
            try:
                samples = run.samples_path(task)
            except ValueError as err:
                raise SubmissionError("results", str(err)) from None
            if samples.is_file():
                name = samples.name if samples.name.endswith(".gz") else f"{samples.name}.gz"
                compress_samples(samples, (target / new).parent / name)
    atomic_write_text(target / MANIFEST, replace(manifest, runs=stored).to_json())


def _check_baseline(baseline: Accepted, paired: Accepted) -> None:
    if baseline.manifest.arm != "baseline":
        raise SubmissionError("baseline", f"--baseline names a {baseline.manifest.arm} submission, not a baseline")
    if paired.manifest.arm == "baseline":
        raise SubmissionError("baseline", "RUN_DIR is a baseline itself: submit it without --baseline")
    if baseline.manifest.model_key != paired.manifest.model_key:
        raise SubmissionError(
            "baseline",
            f"--baseline is {_model(baseline.manifest)}, RUN_DIR is {_model(paired.manifest)}: not the same model and subset",
        )


def _check_duplicate(candidate: Accepted, board: list[Accepted]) -> None:
    for other in board:
        if other.fingerprint == candidate.fingerprint:
            raise SubmissionError("duplicate", f"its samples are identical to those of accepted submission {other.id}")
        shared = [t for t in candidate.tasks if t in other.tasks]
        if other.manifest.configuration == candidate.manifest.configuration and shared:
            raise SubmissionError(
                "duplicate",
                f"accepted submission {other.id} already holds {candidate.manifest.arm_label} results of "
                f"{_model(candidate.manifest)} on {len(shared)} of its tasks ({', '.join(shared[:3])}"
                f"{', ...' if len(shared) > 3 else ''}); remove that submission first to replace it",
            )


def _check_pairing(candidate: Accepted, board: list[Accepted]) -> None:
    """Baseline, ACT and ICL of one model must have scored the same documents (baseline and ACT: the same prompts)."""
    for other in board:
        if other.manifest.model_key != candidate.manifest.model_key or other.manifest.arm == candidate.manifest.arm:
            continue
        same_prompt = "icl" not in (other.manifest.arm, candidate.manifest.arm)
        for task in (t for t in candidate.tasks if t in other.tasks):
            filt = candidate.tasks[task].filter
            for theirs in other.runs:
                for mine in candidate.runs:
                    try:
                        check_paired(
                            read_task_samples(theirs, task, filt),
                            read_task_samples(mine, task, filt),
                            names=(other.id, "this submission"),
                            same_prompt=same_prompt,
                        )
                    except ValueError as err:
                        raise SubmissionError(
                            "pairing", f"it does not pair with accepted submission {other.id}: {err}"
                        ) from None


def _model(manifest: Manifest) -> str:
    return f"{manifest.model.id} ({manifest.model.weights}, {manifest.subset})"
