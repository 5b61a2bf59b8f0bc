// The main loop is part of the VMM's interface (`Machine.launch(on:)`, the API server).
@_exported import EventLoop
