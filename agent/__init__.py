"""chutes.agent: see DESIGN.md, "Components and layout"."""
