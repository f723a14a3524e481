//! Tests of the parent module.
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
        (spec.train.loss, spec.train.reduction),
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
        assert_eq!(spec.train.loss, Some(expected));
        assert_eq!(spec.train.reduction, Reduction::Sum);
        spec.validate().unwrap();
    }
    for bad in [json!({"loss": "l1"}), json!({"reduction": "max"})] {
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
