"""The lab's category list: what a reviewer can assign and what the differential counts.

A superset of the model's classes (the model card, app.ml.card). The lab keeps one
current list (table `lab_categories`, edited by an administrator); each case snapshots it at
creation (`cases.categories`), so a later edit never changes a case already counted."""
