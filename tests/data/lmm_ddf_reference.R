# Reference values for tests/test_ddf.py: lme4 + lmerTest (Satterthwaite) + pbkrtest (Kenward-Roger)
# on the three small trials of lmm_small_trials.csv (battery "small" scenario draws).
#   Rscript tests/data/lmm_ddf_reference.R   (from the repository root)
# Writes tests/data/lmm_ddf_reference.csv: one row per (dataset, contrast, method) with the
# estimate, SE, df and 95% t interval, and the fixed effects lme4 keeps (dropped ones listed).
suppressMessages({library(lme4); library(lmerTest); library(pbkrtest)})
d <- read.csv("tests/data/lmm_small_trials.csv")
covs <- c("X1", "X2", "X3", "X4", "V1", "V2")
f <- as.formula(paste("outcome ~ treatment +", paste(covs, collapse = " + "), "+",
                      paste0("treatment:", covs, collapse = " + "), "+ (1 | cluster)"))
out <- list()
for (ds in unique(d$dataset)) {
  dd <- d[d$dataset == ds, ]
  m <- lmerTest::lmer(f, data = dd, REML = TRUE)
  full <- c("(Intercept)", "treatment", covs, paste0("treatment:", covs))
  kept <- names(fixef(m))
  dropped <- setdiff(full, kept)
  # CATE contrast rows: d/dA of the design = [0, 1, 0..., covariates]
  Cfull <- cbind(0, 1, matrix(0, nrow(dd), length(covs)), as.matrix(dd[, covs]))
  colnames(Cfull) <- full
  C <- Cfull[, kept, drop = FALSE]
  rows <- list(ate = colMeans(C), row1 = C[1, ], row50 = C[50, ], row100 = C[100, ])
  vc <- as.data.frame(VarCorr(m))
  for (nm in names(rows)) {
    L <- rows[[nm]]
    for (meth in c("Satterthwaite", "Kenward-Roger")) {
      t <- contest(m, matrix(L, nrow = 1), joint = FALSE, ddf = meth, confint = TRUE)
      out[[length(out) + 1]] <- data.frame(
        dataset = ds, contrast = nm, method = meth, estimate = t$Estimate, se = t$`Std. Error`,
        df = t$df, lower = t$lower, upper = t$upper, tau2 = vc$vcov[1], sigma2 = vc$vcov[2],
        dropped = paste(dropped, collapse = ";"))
    }
  }
}
res <- do.call(rbind, out)
write.csv(res, "tests/data/lmm_ddf_reference.csv", row.names = FALSE)
print(res, digits = 8)
