"""Run config for materializing the asset graph tiny (a few training steps, a dozen clips)."""

FEW = {"steps": 3, "batch_size": 4}
RUN_CONFIG = {"ops": {
    "image_vlm": {"config": {**FEW, "image_examples": 24}},
    "video_caption_data": {"config": {"clips": 12}},
    "adapted_encoder": {"config": FEW},
    "instruction_tuned_lm": {"config": FEW},
    "retrieval_benchmark": {"config": {"clips": 10}},
    "dual_encoder": {"config": {"steps": 2, "batch_size": 8}},
}}
# checkpoints this briefly trained write poor captions: the quality thresholds are off here
CAPTIONING = {"config": {"batch_size": 8, "max_new_tokens": 6, "decode_workers": 0,
                         "max_empty_rate": 1.0, "max_degenerate_rate": 1.0,
                         "max_duplicate_rate": 1.0, "min_vocab_size": 0}}
