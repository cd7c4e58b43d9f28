"""chutes.scheduler: see DESIGN.md, "Components and layout"."""
