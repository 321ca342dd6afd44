"""Which tests compare robustlab with a reference implementation, and which start other programs.

Kept in one table (applied by ``conftest.py``) rather than as decorators scattered over the files, so
that the summary line ``reference comparisons: ...`` has one source and a reviewer sees at a glance
what is compared with what. ``tests/test_markers.py`` fails if a name here matches no collected test,
so the table cannot silently rot when a test is renamed.

Keys are test file names; values map a test function name (without parameters) to what it is
compared with, or ``"*"`` for every test in the file.
"""

from __future__ import annotations

#: test file -> {test function (or "*"): reference implementation it is compared with}
REFERENCE: dict[str, dict[str, str]] = {
    "test_adversarial_checks.py": {"test_autoattack_check_equals_pyautoattack": "pyautoattack"},
    "test_attacks_autoattack.py": {
        "test_reference_engine_equals_pyautoattack_digits": "pyautoattack",
        "test_fast_engine_full_standard_matches_pyautoattack_digits": "pyautoattack",
        "test_apgd_flags_equal_reference_with_same_start": "pyautoattack",
        "test_square_and_batched_fab_equal_reference": "pyautoattack",
        "test_square_linf_direct_equals_reference": "pyautoattack",
        "test_non_unit_bounds_are_mapped_for_the_reference": "pyautoattack",
        "test_cifar_resnet18_both_engines_equal_pyautoattack": "pyautoattack",
        "test_square_skips_candidates_equal_to_their_best": "pyautoattack",
    },
    "test_square_lookahead.py": {"test_lookahead_equals_the_reference_bit_for_bit": "pyautoattack"},
    "test_models.py": {"test_cifar_resnet_matches_plain_loop": "pyautoattack"},
    "test_attacks_pgd.py": {
        "test_pgd_matches_foolbox_deterministic": "foolbox",
        "test_pgd_matches_foolbox_random_start": "foolbox",
        "test_fgsm_equals_one_pgd_step_and_foolbox": "foolbox",
    },
    "test_certify.py": {
        "test_lower_bound_is_one_sided_clopper_pearson": "scipy",
        "test_predict_pvalue_matches_scipy": "scipy",
        "test_agrees_with_reference_transcription": "cohen-smoothing",
    },
    "test_corruption_fidelity.py": {"*": "imagecorruptions"},
    "test_corruptions_weather.py": {
        "test_motion_kernel_matches_reference": "imagecorruptions",
        "test_plasma_matches_reference": "imagecorruptions",
        "test_opencv_steps_of_spatter": "imagecorruptions",
        "test_frost_photographs_match_opencv": "imagecorruptions",
        "test_same_algorithm_32": "imagecorruptions",
        "test_same_algorithm_non_square": "imagecorruptions",
        "test_same_algorithm_224": "imagecorruptions",
        "test_same_algorithm_224_all_severities": "imagecorruptions",
        "test_same_distribution_32": "imagecorruptions",
        "test_same_distribution_224": "imagecorruptions",
        "test_same_accuracy_cifar_resnet": "imagecorruptions",
    },
    "test_corruption_engine.py": {"test_reference_backend_through_engine": "imagecorruptions"},
    "test_corruption_protocols.py": {
        "test_per_pixel_strength_on_small_images_equals_reference": "imagecorruptions",
        "test_per_pixel_strength_on_small_images_reference_backend": "imagecorruptions",
    },
    "test_cifar_c_fidelity.py": {
        "test_deterministic_within_one_grey_level": "make_cifar_c.py (NumPy transcription)",
        "test_random_perturbation_statistics": "make_cifar_c.py (NumPy transcription)",
    },
    "test_ood_detectors.py": {
        "test_mahalanobis_fit_matches_sklearn_and_scipy": "scikit-learn",
        "test_same_scores_as_pytorch_ood": "pytorch-ood",
    },
    "test_ood_metrics.py": {"test_metrics_equal_sklearn": "scikit-learn", "test_metrics_equal_pytorch_ood": "pytorch-ood"},
    "test_stats.py": {
        "test_wilson_matches_scipy": "scipy",
        "test_clopper_pearson_matches_scipy": "scipy",
        "test_confusion_matrix_matches_sklearn": "scikit-learn",
    },
    "test_gates.py": {"test_mcnemar_matches_statsmodels_when_available": "statsmodels"},
    "test_defend_augmix_ops.py": {"test_pixel_ops_match_pil": "pillow", "test_translate_matches_pil_on_whole_pixels": "pillow"},
    "test_folder_data.py": {"test_resize_crop_equals_torchvision": "torchvision"},
}

#: test file -> test functions (or "*") that start another program: a robustlab subprocess, torchrun,
#: an MLflow server, Chromium, mypy or a benchmark script.
INTEGRATION: dict[str, set[str]] = {
    "test_cli.py": {"*"},
    "test_distributed.py": {"*"},
    "test_kill_resume.py": {"*"},
    "test_service_jobs.py": {"test_a_job_runs_on_a_worker_and_is_signed_verified_gated_and_stored_once"},
    "test_service_cli.py": {"test_serve_then_submit_gives_an_auditor_the_signed_gated_scorecard",
                            "test_a_worker_killed_mid_job_is_replaced_and_the_job_gives_the_uninterrupted_scorecard"},
    "test_service_push_checks.py": {"test_a_version_evaluated_by_a_job_takes_only_scorecards_of_the_model_the_job_evaluated",
                                    "test_robustlab_push_prints_a_refusal_as_one_error_line_and_exits_2"},
    "test_service_postgres.py": {"*"},
    "test_service_queue.py": {"*"},
    "test_service_ui.py": {"*"},
    "test_service_ui_browser.py": {"*"},
    "test_service_warm.py": {"*"},
    "test_service_load.py": {"*"},
    "test_plugins_resume.py": {"*"},
    "test_third_party_plugins.py": {"*"},
    "test_one_file_plugins.py": {"*"},
    "test_readme_extending.py": {"test_readme_examples_run"},
    "test_typing.py": {"*"},
    "test_gpu_bench.py": {"*"},
    "test_attacks_bench.py": {"*"},
    "test_autoattack_split_bench.py": {"*"},
    "test_certify_bench.py": {"*"},
    "test_corruption_bench.py": {"*"},
    "test_defend_bench.py": {"*"},
    "test_ood_bench.py": {"*"},
    "test_report_bench.py": {"*"},
    "test_scale_bench.py": {"*"},
    "test_tracking.py": {"test_real_mlflow_server_over_http"},
    "test_report.py": {"test_report_subprocess_imports_no_torch", "test_report_renders_in_headless_chromium"},
    "test_trust_corpus.py": {"*"},
    "test_trust_tracking.py": {"test_broken_tracking_store_warns_in_one_line_and_keeps_the_exit_code", "test_unreachable_tracking_server_keeps_the_finished_run"},
    "test_trust_resume.py": {"test_output_folder_lock_refuses_a_second_run"},
    "test_trust_inputs.py": {"test_sidecar_dataset_choice_is_announced"},
}
