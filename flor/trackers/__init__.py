"""The user's experiment trackers (TensorBoard, MLflow, W&B), seen from a recording run.

``hooks``: values a script logs through ``SummaryWriter.add_scalar(s)``, ``mlflow.log_metric(s)``
and ``wandb.log`` are also recorded by flor in their loop context, and the tracker run they went
to is noted in the run's environment (``flor show``; ``flor export`` writes back there). Nothing
here imports a tracker: hooks go in only where the script already imported one.
"""
