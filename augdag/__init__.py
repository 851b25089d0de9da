"""augdag: a workflow-orchestrated, quality-gated data-augmentation DAG for fine-tuning."""

__version__ = "0.1.0"
