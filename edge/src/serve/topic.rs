//! Topics: which device a message is from, and where its results go.
//!
//! The device id is one level of the message's topic: by default the level of the first `+`
//! wildcard in the subscription (`sensors/+/samples` -> `sensors/pump-7/samples` is device
//! `pump-7`). Results go to the publish template with `{device}` replaced.

/// Why a subscription or template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// No level to take the device id from.
    #[error("subscription '{0}' has no '+' level to take the device id from; give --device-level")]
    NoDeviceLevel(String),
    /// The level is past the subscription's end or on a '#'.
    #[error("--device-level {level} is not a level of subscription '{filter}' before any '#'")]
    BadLevel {
        /// 1-based level.
        level: usize,
        /// The subscription.
        filter: String,
    },
    /// The publish template does not name the device.
    #[error("publish template '{0}' does not contain {{device}}: every device's results would share one topic; add {{device}}")]
    NoDevice(String),
    /// Wildcards in a publish topic.
    #[error("publish template '{0}' contains a wildcard ('+' or '#'), which MQTT does not allow in a topic name")]
    Wildcard(String),
}

/// Takes device ids from topics matching one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLevel {
    /// 0-based level index.
    index: usize,
}

impl DeviceLevel {
    /// The level of `filter` that names the device: `level` (1-based) or the first `+`.
    pub fn new(filter: &str, level: Option<usize>) -> Result<Self, TopicError> {
        let levels: Vec<&str> = filter.split('/').collect();
        let index = match level {
            Some(l) if l >= 1 && l <= levels.len() && levels[..l].iter().all(|s| *s != "#") => l - 1,
            Some(level) => return Err(TopicError::BadLevel { level, filter: filter.into() }),
            None => levels.iter().position(|s| *s == "+").ok_or_else(|| TopicError::NoDeviceLevel(filter.into()))?,
        };
        Ok(DeviceLevel { index })
    }

    /// The device a message on `topic` is from; `None` when the topic is too short or the level
    /// is empty.
    pub fn device<'t>(&self, topic: &'t str) -> Option<&'t str> {
        topic.split('/').nth(self.index).filter(|d| !d.is_empty())
    }
}

/// The topic results of a device go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishTemplate(String);

impl PublishTemplate {
    /// Checks the template (`{device}` present, no wildcards).
    pub fn new(template: &str) -> Result<Self, TopicError> {
        if !template.contains("{device}") {
            return Err(TopicError::NoDevice(template.into()));
        }
        if template.contains('+') || template.contains('#') {
            return Err(TopicError::Wildcard(template.into()));
        }
        Ok(PublishTemplate(template.into()))
    }

    /// The topic for `device`.
    pub fn topic(&self, device: &str) -> String {
        self.0.replace("{device}", device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_from_topic_and_result_topic() {
        let l = DeviceLevel::new("sensors/+/samples", None).unwrap();
        assert_eq!(l.device("sensors/pump-7/samples"), Some("pump-7"));
        assert_eq!(l.device("sensors"), None);
        assert_eq!(l.device("sensors//samples"), None);
        let l = DeviceLevel::new("site/#", Some(1)).unwrap();
        assert_eq!(l.device("site/a/b"), Some("site"));
        assert!(matches!(DeviceLevel::new("a/b", None), Err(TopicError::NoDeviceLevel(_))));
        assert!(matches!(DeviceLevel::new("a/#", Some(2)), Err(TopicError::BadLevel { .. })));
        assert!(matches!(DeviceLevel::new("a/b", Some(3)), Err(TopicError::BadLevel { .. })));
        let p = PublishTemplate::new("clusters/{device}").unwrap();
        assert_eq!(p.topic("pump-7"), "clusters/pump-7");
        assert!(PublishTemplate::new("clusters").is_err() && PublishTemplate::new("c/+/{device}").is_err());
    }
}
