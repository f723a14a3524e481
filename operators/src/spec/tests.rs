//! Tests of the parent module.
use millrace_ml::model::Task;
use millrace_ml::trainer::{Loss, Reduction};
use millrace_ml::{Device, Precision};
use serde_json::{Value, json};

use super::*;

fn pipeline(train: Value) -> PipelineSpec {
    let spec = json!({"ingest": {"path": "data/x"}, "preprocess": {"numeric": ["a"], "label": "y"},
                      "train": train});
    serde_json::from_value(spec).unwrap()
}

#[test]
fn train_loss_and_reduction_parse_with_defaults() {
    let spec = pipeline(json!({"model": {"kind": "logistic"}}));
    assert_eq!(
        (spec.train.loss.clone(), spec.train.reduction),
        (None, Reduction::Mean)
    );
    let binary = Task::Classification { num_classes: 2 };
    assert_eq!(spec.train.loss_for(&binary).unwrap(), Loss::CrossEntropy);
    spec.validate().unwrap();
    for (task, kind, loss, expected) in [
        ("regression", "linear", "mae", Loss::Mae),
        ("regression", "linear", "mse", Loss::Mse),
        (
            "classification",
            "logistic",
            "cross_entropy",
            Loss::CrossEntropy,
        ),
    ] {
        let spec = pipeline(json!({"task": task, "model": {"kind": kind}, "loss": loss,
                                   "reduction": "sum"}));
        assert_eq!(spec.train.loss, Some(expected.into()));
        assert_eq!(spec.train.reduction, Reduction::Sum);
        spec.validate().unwrap();
    }
    // A loss name nobody registered parses, and fails the check naming what is known.
    let spec = pipeline(json!({"model": {"kind": "logistic"}, "loss": "l1"}));
    let err = spec.validate().unwrap_err().to_string();
    assert!(
        err.contains("train.loss") && err.contains("`l1`") && err.contains("mae"),
        "{err}"
    );
    for bad in [json!({"reduction": "max"}), json!({"loss": 3})] {
        let mut train = json!({"model": {"kind": "logistic"}});
        train
            .as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        assert!(serde_json::from_value::<TrainSpec>(train).is_err(), "{bad}");
    }
}

#[test]
fn train_loss_must_fit_the_task() {
    let spec = pipeline(json!({"model": {"kind": "logistic"}, "loss": "mse"}));
    let err = spec.validate().unwrap_err().to_string();
    assert!(
        err.contains("train.loss") && err.contains("cross_entropy"),
        "{err}"
    );
    let binary = Task::Classification { num_classes: 2 };
    let err = spec.train.loss_for(&binary).unwrap_err().to_string();
    assert!(err.contains("train.loss"), "{err}");
    let spec = pipeline(json!({"task": "regression", "model": {"kind": "linear"},
                               "loss": "cross_entropy"}));
    let err = spec.validate().unwrap_err().to_string();
    assert!(
        err.contains("train.loss") && err.contains("`mse` or `mae`"),
        "{err}"
    );
    assert!(spec.train.loss_for(&Task::Regression).is_err());
}

#[test]
fn train_device_precision_and_kernel_cache_parse_with_defaults() {
    let spec = pipeline(json!({"model": {"kind": "logistic"}}));
    assert_eq!(
        (
            spec.train.device,
            spec.train.precision,
            &spec.train.kernel_cache
        ),
        (Device::Cpu, Precision::F32, &None)
    );
    spec.validate().unwrap();
    for (text, device) in [
        ("cpu", Device::Cpu),
        ("cuda", Device::Cuda(0)),
        ("cuda:0", Device::Cuda(0)),
        ("cuda:3", Device::Cuda(3)),
    ] {
        let spec = pipeline(json!({"model": {"kind": "logistic"}, "device": text,
                                   "precision": "bf16", "kernel_cache": "/tmp/kernels"}));
        assert_eq!(spec.train.device, device, "{text}");
        assert_eq!(spec.train.precision, Precision::Bf16);
        assert_eq!(
            spec.train.kernel_cache.as_deref(),
            Some(std::path::Path::new("/tmp/kernels"))
        );
    }
    let spec = pipeline(json!({"model": {"kind": "logistic"}, "precision": "f32"}));
    assert_eq!(spec.train.precision, Precision::F32);
    // The device prints back as it is written in a pipeline file.
    assert_eq!(
        serde_json::to_value(
            &pipeline(json!({"model": {"kind": "logistic"}, "device": "cuda"})).train
        )
        .unwrap()["device"],
        json!("cuda:0")
    );
    for (bad, expected) in [
        (json!({"device": "tpu"}), "unknown device `tpu`"),
        (json!({"device": "cuda:x"}), "unknown device `cuda:x`"),
        (json!({"precision": "fp16"}), "unknown variant `fp16`"),
    ] {
        let mut train = json!({"model": {"kind": "logistic"}});
        train
            .as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        let err = serde_json::from_value::<TrainSpec>(train)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{bad}: {err}");
    }
}

#[test]
fn bf16_on_the_cpu_is_a_config_error_naming_train_precision() {
    let spec = pipeline(json!({"model": {"kind": "logistic"}, "precision": "bf16"}));
    let err = spec.validate().unwrap_err();
    match &err {
        Error::Config { key, message } => {
            assert_eq!(key, "train.precision");
            assert!(
                message.contains(r#"train.precision = "bf16" needs device = "cuda""#),
                "{message}"
            );
        }
        other => panic!("not a config error: {other}"),
    }
    let err = spec.train.validate_device().unwrap_err().to_string();
    assert!(err.starts_with("[train.precision]"), "{err}");
}

/// Without the `cuda` feature a GPU is refused before any work starts, naming the key and how
/// to get a build that has one.
#[cfg(not(feature = "cuda"))]
#[test]
fn a_gpu_in_a_build_without_cuda_fails_validation_naming_train_device() {
    for device in ["cuda", "cuda:1"] {
        let spec = pipeline(json!({"model": {"kind": "logistic"}, "device": device}));
        let err = spec.validate().unwrap_err();
        let Error::Config { key, message } = &err else {
            panic!("not a config error: {err}");
        };
        assert_eq!(key, "train.device");
        assert!(
            message.contains("built without GPU support") && message.contains("--features cuda"),
            "{message}"
        );
        assert!(message.contains(r#"train.device = "cpu""#), "{message}");
        // bf16 on a GPU is fine as far as precision goes: the device is what fails.
        let spec = pipeline(json!({"model": {"kind": "logistic"}, "device": device,
                                   "precision": "bf16"}));
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.starts_with("[train.device]"), "{err}");
    }
}

/// With the `cuda` feature but no usable GPU here, validation says so for `train.device`.
#[cfg(feature = "cuda")]
#[test]
fn a_gpu_that_is_not_there_fails_validation_naming_train_device() {
    if Device::cuda_device_count() > 0 {
        return;
    }
    let spec = pipeline(json!({"model": {"kind": "logistic"}, "device": "cuda"}));
    let err = spec.validate().unwrap_err().to_string();
    assert!(err.starts_with("[train.device]"), "{err}");
}

#[test]
fn serve_device_parses_and_is_validated() {
    let with_serve = |serve: Value| -> PipelineSpec {
        let spec = json!({"ingest": {"path": "data/x"},
                          "preprocess": {"numeric": ["a"], "label": "y"},
                          "train": {"model": {"kind": "logistic"}}, "serve": serve});
        serde_json::from_value(spec).unwrap()
    };
    let spec = with_serve(json!({}));
    let serve = spec.serve.as_ref().unwrap();
    assert_eq!(
        (serve.device, serve.precision, &serve.kernel_cache),
        (Device::Cpu, Precision::F32, &None)
    );
    assert_eq!(serve.forward(), crate::serve::ForwardDevice::default());
    spec.validate().unwrap();

    let spec = with_serve(json!({"device": "cuda:2", "precision": "bf16",
                                 "kernel_cache": "/var/cache/k", "max_rows": 5}));
    let serve = spec.serve.as_ref().unwrap();
    assert_eq!(serve.device, Device::Cuda(2));
    assert_eq!(serve.max_rows, 5);
    assert_eq!(
        serve.forward(),
        crate::serve::ForwardDevice {
            device: Device::Cuda(2),
            precision: Precision::Bf16,
            kernel_cache: Some("/var/cache/k".into()),
        }
    );
    let err = serde_json::from_value::<ServeSpec>(json!({"device": "npu"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown device `npu`"), "{err}");

    let err = with_serve(json!({"precision": "bf16"}))
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("[serve.precision]") && err.contains(r#"serve.precision = "bf16" needs"#),
        "{err}"
    );
    #[cfg(not(feature = "cuda"))]
    {
        let err = with_serve(json!({"device": "cuda"}))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("[serve.device]") && err.contains("--features cuda"),
            "{err}"
        );
    }
}

#[test]
fn serve_exposure_token_and_tls_are_checked_before_work_starts() {
    use crate::serve::tls::tests::{scratch, self_signed};
    let with_serve = |serve: Value| -> PipelineSpec {
        let spec = json!({"ingest": {"path": "data/x"},
                          "preprocess": {"numeric": ["a"], "label": "y"},
                          "train": {"model": {"kind": "logistic"}}, "serve": serve});
        serde_json::from_value(spec).unwrap()
    };
    let err = |serve: Value| with_serve(serve).validate().unwrap_err().to_string();

    // A public address without a token: refused, naming the key and the ways out.
    let e = err(json!({"addr": "0.0.0.0:8080"}));
    assert!(
        e.starts_with("[serve.addr] 0.0.0.0:8080 is reachable"),
        "{e}"
    );
    for fix in [
        "serve.auth_token_file",
        "127.0.0.1",
        "serve.allow_unauthenticated = true",
    ] {
        assert!(e.contains(fix), "{fix} not in {e}");
    }
    let open = with_serve(json!({"addr": "0.0.0.0:8080", "allow_unauthenticated": true}));
    open.validate().unwrap();
    let options = open.serve.as_ref().unwrap().options().unwrap();
    assert!(options.allow_unauthenticated && options.auth_token.is_none());
    with_serve(json!({"addr": "[::1]:8080"}))
        .validate()
        .unwrap();

    let dir = scratch("spec");
    let token = dir.join("token");
    std::fs::write(&token, "abc\n").unwrap();
    let spec = with_serve(json!({"addr": "0.0.0.0:8080", "auth_token_file": token}));
    spec.validate().unwrap();
    let options = spec.serve.as_ref().unwrap().options().unwrap();
    assert_eq!(options.auth_token.as_deref(), Some("abc"));
    let e = err(json!({"addr": "0.0.0.0:8080", "auth_token_file": dir.join("none")}));
    assert!(
        e.starts_with("[serve.auth_token_file]") && e.contains("none"),
        "{e}"
    );

    // TLS: both keys, files that load, errors naming the key and the file.
    let (cert, key) = self_signed(&dir, "spec");
    let spec = with_serve(json!({"tls_cert": cert, "tls_key": key}));
    spec.validate().unwrap();
    let options = spec.serve.as_ref().unwrap().options().unwrap();
    assert_eq!(
        options.tls,
        Some(crate::serve::tls::TlsFiles::new(&cert, &key))
    );
    let e = err(json!({"tls_cert": cert}));
    assert!(e.starts_with("[serve.tls_key] missing"), "{e}");
    let e = err(json!({"tls_key": key}));
    assert!(e.starts_with("[serve.tls_cert] missing"), "{e}");
    let e = err(json!({"tls_cert": dir.join("gone.crt"), "tls_key": key}));
    assert!(
        e.starts_with("[serve.tls_cert]") && e.contains("gone.crt"),
        "{e}"
    );
    let e = err(json!({"tls_cert": cert, "tls_key": token}));
    assert!(
        e.starts_with("[serve.tls_key]") && e.contains("no PEM private key"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
