"""Training-loop settings shared by every config (``cfg.train``); read by ``mrdetr.engine.runner``."""

train = dict(
    output_dir="./output",
    # initial weights: official layout, {"model": state_dict} or a plain state dict ("" = none)
    init_checkpoint="",
    # an init_checkpoint that fills less than this share of the model's keys is an error (ImageNet
    # backbone files fill about 0.4 of a Mr. DETR); 0 loads any file
    init_checkpoint_min_match=0.2,
    max_iter=90000,  # optimizer steps; with grad_accum_steps=k each step consumes k batches
    amp=dict(enabled=False, dtype="float16"),  # dtype: "float16" (GradScaler) or "bfloat16"
    # dtype of evaluation, the Predictor and the demo: "float32", "bfloat16" (weights cast once,
    # frozen BN folded, channels-last backbone: mrdetr.engine.precision) or "auto" (bfloat16 on a
    # CUDA device with bf16 or a CPU with native bf16 instructions, AMX or avx512_bf16, else
    # float32); training keeps float32 weights
    inference_dtype="float32",
    # torch.compile of these submodules for the Predictor, the demo and --eval-only runs (not for
    # training); off by default: benchmarks/README.md has the compile time and the speed-up
    compile=dict(enabled=False, modules=["backbone", "neck"]),
    # find_unused_parameters "auto": true when the model trains only some of its decoder routes
    # (model.train_routes; the others' parameters get no gradient), else false
    ddp=dict(broadcast_buffers=False, find_unused_parameters="auto"),
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=5000,
    eval_at_start=False,  # also evaluate before the first iteration
    # per-route AP (raw / class-wise NMS), duplicates per object and one-to-many positives at every
    # evaluation, stored as routes/<route>/<metric> (mrdetr.evaluation.route_diagnostics)
    route_report=dict(enabled=False, nms_iou=0.7, score_threshold=0.3, match_iou=0.5),
    log_period=20,
    device="auto",  # "auto": cuda if available, else cpu
    seed=-1,  # -1: a random seed, logged in log.txt
    deterministic=False,
    clip_grad=dict(enabled=True, params=dict(max_norm=0.1, norm_type=2)),
    grad_accum_steps=1,
    # use_ema_weights_for_eval_only: with --eval-only, evaluate the checkpoint's EMA weights
    model_ema=dict(enabled=False, decay=0.999, device="", use_ema_weights_for_eval_only=False),
    fast_dev_run=dict(enabled=False, max_iter=20, eval_period=10, log_period=1),
    nan_policy="stop",  # "stop": raise on a non-finite loss; "skip": drop that update
    # on the first of these signals: finish the iteration (and its due evaluation), write
    # model_{iter}.pth, exit with status 128 + the signal's number; --resume continues exactly.
    # Ctrl-C twice stops at once. [] turns it off (mrdetr.engine.stop_signal)
    stop_signals=["SIGTERM", "SIGINT"],
    # taken over even when another handler owns them, which then runs after the stop checkpoint
    # (the SLURM launcher adds submitit's preemption signal, SIGUSR2, here)
    stop_chained_signals=[],
    # experiment trackers (main process only; pip install 'mrdetr[wandb]' / 'mrdetr[mlflow]'):
    # scalars, the config and the evaluation tables. wandb: any other key goes to wandb.init
    # (entity, tags, mode="offline", ...); dir "" = output_dir.
    wandb=dict(enabled=False, project="mrdetr", name="", dir=""),
    # mlflow: tracking_uri "" = sqlite:///<output_dir>/mlflow.db with artifacts in
    # <output_dir>/mlartifacts; run_name "" = MLflow picks one
    mlflow=dict(enabled=False, tracking_uri="", experiment="mrdetr", run_name=""),
)
