"""Gateway routes, one module per resource; each exports `routes: list[BaseRoute]`."""
