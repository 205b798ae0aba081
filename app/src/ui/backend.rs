//! How the app reaches a call engine: the real [`Engine`] on its own thread, or a
//! [`FakeEngine`] that tests fill with events and read commands from.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::engine::{Command, Engine, EngineConfig, Event};

/// What the views need from a running call engine. Neither method blocks.
pub trait CallEngine: fmt::Debug + Send {
    /// Sends a command; false when the engine has stopped.
    fn send(&self, command: Command) -> bool;
    /// The next event, if one is queued.
    fn try_event(&self) -> Option<Event>;
}

impl CallEngine for Engine {
    fn send(&self, command: Command) -> bool {
        Engine::send(self, command)
    }

    fn try_event(&self) -> Option<Event> {
        Engine::try_event(self)
    }
}

/// Starts an engine from a configuration (the app builds the configuration from the settings).
pub type StartEngine =
    Box<dyn FnMut(EngineConfig) -> Result<Box<dyn CallEngine>, String> + Send + 'static>;

/// The real engine, started on its own thread.
pub fn real_engine() -> StartEngine {
    Box::new(|config| {
        Engine::start(config)
            .map(|e| Box::new(e) as Box<dyn CallEngine>)
            .map_err(|e| e.to_string())
    })
}

/// A stand-in engine for tests: events pushed with [`FakeEngine::push`] come out of
/// `try_event`; commands sent are kept for [`FakeEngine::commands`]. Clones share everything.
#[derive(Debug, Clone, Default)]
pub struct FakeEngine {
    shared: Arc<Mutex<FakeShared>>,
}

#[derive(Debug, Default)]
struct FakeShared {
    events: VecDeque<Event>,
    commands: Vec<Command>,
    configs: Vec<EngineConfig>,
}

impl FakeEngine {
    /// An engine with nothing queued.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an event for the app.
    pub fn push(&self, event: Event) {
        if let Ok(mut s) = self.shared.lock() {
            s.events.push_back(event);
        }
    }

    /// Every command the app sent, in order.
    pub fn commands(&self) -> Vec<Command> {
        self.shared
            .lock()
            .map(|s| s.commands.clone())
            .unwrap_or_default()
    }

    /// The server of every configuration the app started this engine with, in order.
    pub fn started_with(&self) -> Vec<String> {
        self.configs().into_iter().map(|c| c.server).collect()
    }

    /// Every configuration the app started this engine with, in order.
    pub fn configs(&self) -> Vec<EngineConfig> {
        self.shared
            .lock()
            .map(|s| s.configs.clone())
            .unwrap_or_default()
    }

    /// A starter that hands out this engine (clones of it) and records the configurations.
    pub fn starter(&self) -> StartEngine {
        let fake = self.clone();
        Box::new(move |config| {
            if let Ok(mut s) = fake.shared.lock() {
                s.configs.push(config);
            }
            Ok(Box::new(fake.clone()) as Box<dyn CallEngine>)
        })
    }
}

impl CallEngine for FakeEngine {
    fn send(&self, command: Command) -> bool {
        match self.shared.lock() {
            Ok(mut s) => {
                s.commands.push(command);
                true
            }
            Err(_) => false,
        }
    }

    fn try_event(&self) -> Option<Event> {
        self.shared.lock().ok()?.events.pop_front()
    }
}
