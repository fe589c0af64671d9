//! `trainer fit`: train, cluster, write the model directory, print the scores.

use anyhow::{bail, Result};

use crate::args::*;
use crate::common::*;
use trainer::checkpoint::Checkpoint;
use trainer::cluster::decision::DecisionParams;
use trainer::fit::{fit, FitOptions};
use trainer::params::{Preset, VraeParams};
use trainer::report::tsne::TsneParams;

pub(crate) fn run_fit(a: FitArgs) -> Result<()> {
    let dev = device(a.data_args.device)?;
    let resume = match &a.resume {
        Some(dir) => {
            let fixed = a.hp.fixed_on_resume();
            if !fixed.is_empty() {
                bail!("--resume continues a run with its own settings; {} cannot change", fixed.join(", "));
            }
            let ck = Checkpoint::load(dir, &dev)?;
            eprintln!(
                "resuming {} after epoch {} of {}",
                dir.display(),
                ck.meta.state.epochs_done,
                a.hp.epochs.unwrap_or(ck.meta.run.params.epochs)
            );
            Some(Box::new(ck))
        }
        None => None,
    };
    let fixed = match a.clusters {
        Some(Clusters::Fixed(k)) => Some(k),
        _ => None,
    };
    let (params, out, holdout, normalization, clusters, n_init) = match &resume {
        Some(ck) => {
            let r = &ck.meta.run;
            let dir = a.resume.clone().unwrap_or_default();
            let asked = r.clustering.ok_or_else(|| anyhow::anyhow!("{}: the checkpoint records no cluster settings", dir.display()))?;
            (a.hp.apply(r.params.clone()).check()?, dir, r.data.holdout, r.data.normalization, asked.clusters, asked.n_init)
        }
        None => (a.hp.apply_fresh(VraeParams::preset(a.preset)).check()?, a.out.clone(), a.holdout, a.normalize, fixed, a.n_init),
    };
    // A resumed run prepares its data as the checkpoint's did: same length mode and cap.
    let (length, max_length) = match &resume {
        Some(ck) => {
            let d = &ck.meta.run.data;
            (d.length, (d.cut > 0).then_some(ck.meta.run.model.seq_len))
        }
        None => (a.length, a.max_length),
    };
    let resume_decision = resume.as_ref().map(|ck| ck.meta.run.clustering.map(|c| c.decision).unwrap_or_default());
    let ds = load(&a.data, &a.data_args)?;
    eprintln!(
        "data: {} series, {} feature(s), length {}..{}, labels: {}",
        ds.len(),
        ds.n_features,
        ds.series.iter().map(|s| s.len).min().unwrap_or(0),
        ds.max_len(),
        if ds.labels.is_some() { "yes" } else { "no" }
    );
    let opts = FitOptions {
        params,
        holdout,
        normalization,
        length,
        max_length,
        clusters,
        auto_clusters: matches!(a.clusters, Some(Clusters::Auto)),
        decision: a.decision.apply(match (&resume_decision, a.preset) {
            (Some(d), _) => *d,
            (None, Preset::Seed) => DecisionParams::seed(),
            (None, Preset::Default) => DecisionParams::default(),
        }),
        n_init,
        progress: progress_reporter(a.quiet),
        checkpoint_every: a.checkpoint_every,
        resume,
        plots: !a.no_plots,
        tsne: TsneParams { perplexity: a.tsne.perplexity, iterations: a.tsne.tsne_iterations, seed: 0 },
        weight_format: a.weights,
    };
    let s = fit(ds, &opts, &out, &dev)?;
    let m = &s.metrics;
    println!("model written to {} (open report.html there)", s.dir.display());
    println!(
        "trained on {} series, held out {}; {:.2} s/epoch (median), {:.1} s in all; final loss {:.5}",
        s.n_train,
        s.n_holdout,
        m.seconds_per_epoch,
        m.train_seconds,
        s.log.last().map_or(f64::NAN, |e| e.loss)
    );
    if let Some(st) = &m.stop {
        println!(
            "training stopped after {} epochs / {} steps: {}; kept epoch {} ({} validation rows)",
            st.epochs, st.steps, st.reason, st.kept_epoch, st.validation_rows
        );
    }
    println!(
        "k = {} ({}), {:?} clustering in {:.1} s, {} prototypes; cluster sizes {:?}",
        m.k, m.k_from, m.method, m.cluster_seconds, m.prototypes, m.cluster_sizes
    );
    println!(
        "device decision = offline clusters on {:.1}% of training series, = nearest-neighbour vote on {:.1}% held out",
        100.0 * m.agreement_train,
        100.0 * m.agreement_holdout
    );
    // Only a choice between decision vectors (`--choose-summary true`, `--representation stability`) measures stability.
    if m.stability.len() > 1 {
        let s: Vec<String> = m.stability.iter().map(|(n, v)| v.map_or(format!("{n} -"), |v| format!("{n} {v:.3}"))).collect();
        println!("resampling stability (ARI): {}; kept the most stable ({})", s.join(", "), m.representation);
    }
    if !m.modularity.is_empty() {
        let s: Vec<String> = m.modularity.iter().map(|(n, v)| v.map_or(format!("{n} -"), |v| format!("{n} {v:.3}"))).collect();
        println!("representation: {} (modularity of each candidate's clustering: {})", m.representation, s.join(", "));
    }
    println!(
        "anomalous (beyond the cluster's {} quantile of training distances): {} training, {} held-out series",
        opts.decision.anomaly_quantile, m.anomalous_train, m.anomalous_holdout
    );
    if m.vrae_train.is_some() {
        println!("{:<22} {:>6} {:>6} {:>6}", "clusters vs labels", "ARI", "NMI", "purity");
        println!("{:<22} {}", "VRAE device train", fmt_scores(m.vrae_train));
        println!("{:<22} {}", "VRAE device held-out", fmt_scores(m.vrae_holdout));
        println!("{:<22} {}", "VRAE offline train", fmt_scores(m.offline_train));
        println!("{:<22} {}", "raw k-means train", fmt_scores(m.raw_train));
        println!("{:<22} {}", "raw k-means held-out", fmt_scores(m.raw_holdout));
    }
    Ok(())
}
