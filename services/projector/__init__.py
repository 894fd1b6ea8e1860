"""The projector: folds every event into the Mongo read models, and turns verified pushes into version
requests (the push trigger)."""
