"""Values into MLflow: metrics with their ``step`` on the MLflow run the flor run logged to (as
noted at record time), else on a new MLflow run per flor run, tagged ``flor.tstamp``,
``flor.code_commit`` and ``flor.projid``, with the run's args as params (found again by its tag
on the next export, never made twice). A (name, step, value) the MLflow run already holds is not
logged again, so exporting twice adds nothing.
"""

from __future__ import annotations

from ..errors import UsageError
from .points import RunPoints

_BATCH = 1000  # MLflow's limit of metrics per log_batch


def write(found: RunPoints, *, tracking_uri: str | None = None, experiment: str | None = None) -> tuple[str, int]:
    """Write ``found``'s points; returns (where: the MLflow run, how many metrics were logged)."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UsageError("flor export --to mlflow needs mlflow: pip install mlflow-skinny (or mlflow)") from None
    noted = found.trackers.get("mlflow") or {}
    uri = tracking_uri or noted.get("tracking_uri")
    client = MlflowClient(uri) if uri else MlflowClient()
    run_id = noted.get("run_id") if not tracking_uri or tracking_uri == noted.get("tracking_uri") else None
    if run_id is None:
        run_id = _flor_run(client, found, experiment or "flor", Param, RunTag)
    millis = int(1000 * (found.run.ended or found.run.started))
    have = {}
    metrics = []
    for point in found.points:
        if point.name not in have:
            have[point.name] = {(m.step, m.value) for m in client.get_metric_history(run_id, point.name)}
        if (point.step, point.value) in have[point.name]:
            continue
        have[point.name].add((point.step, point.value))
        metrics.append(Metric(point.name, point.value, millis, point.step))
    for first in range(0, len(metrics), _BATCH):
        client.log_batch(run_id, metrics=metrics[first:first + _BATCH])
    return f"mlflow run {run_id} ({client.tracking_uri})", len(metrics)


def _flor_run(client, found: RunPoints, experiment: str, Param, RunTag) -> str:
    """The MLflow run made for this flor run by an earlier export, or a new one."""
    found_experiment = client.get_experiment_by_name(experiment)
    experiment_id = found_experiment.experiment_id if found_experiment else client.create_experiment(experiment)
    run = found.run
    tstamp = run.tstamp.replace("'", "")
    earlier = client.search_runs([experiment_id], filter_string=f"tags.`flor.tstamp` = '{tstamp}'", max_results=1)
    if earlier:
        return earlier[0].info.run_id
    tags = {"flor.tstamp": run.tstamp, "flor.projid": run.projid, "flor.filename": run.filename,
            "flor.code_commit": run.code_commit or "unversioned", "mlflow.runName": f"flor {run.tstamp}"}
    created = client.create_run(experiment_id, start_time=int(1000 * run.started), tags=tags)
    params = [Param(str(k), str(v)[:6000]) for k, v in found.args.items()]
    for first in range(0, len(params), 100):
        client.log_batch(created.info.run_id, params=params[first:first + 100])
    status = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}.get(run.status, "FINISHED")
    client.set_terminated(created.info.run_id, status=status,
                          end_time=int(1000 * run.ended) if run.ended else None)
    return created.info.run_id
