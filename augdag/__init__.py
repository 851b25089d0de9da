"""augdag: a workflow-orchestrated, quality-gated data-augmentation DAG for fine-tuning."""

from augdag.env import set_offline

set_offline()  # before any hub client is imported: nothing is downloaded at run time

__version__ = "0.1.0"
