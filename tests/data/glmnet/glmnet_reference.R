# Reference values of the weighting estimators (personalized::fit.subgroup, loss = "sq_loss_lasso",
# as in youmisuk/multisiteOTR SimulationCodes.R) computed with glmnet 4.1-6 directly:
#   cv.glmnet(x = (2T - 1) * cbind(1, x), y, weights, offset, family = "gaussian",
#             intercept = FALSE, penalty.factor, foldid)   -> score = cbind(1, x_test) %*% beta(lambda.min)
# Run from the repository root:  Rscript tests/data/glmnet/glmnet_reference.R
suppressPackageStartupMessages({library(glmnet); library(jsonlite)})
here <- "tests/data/glmnet"
d <- read.csv(gzfile(file.path(here, "otr_replicates.csv.gz")))
methods <- list(
  "w-base"   = list(prop = "overall", aug = "none", site = FALSE),
  "w-noaug"  = list(prop = "cluster", aug = "none", site = FALSE),
  "w-aug"    = list(prop = "cluster", aug = "l",    site = FALSE),
  "w-augid"  = list(prop = "cluster", aug = "s",    site = FALSE),
  "ws-noaug" = list(prop = "cluster", aug = "none", site = TRUE),
  "ws-aug"   = list(prop = "cluster", aug = "l",    site = TRUE),
  "ws-augid" = list(prop = "cluster", aug = "s",    site = TRUE))
out <- list()
for (case in unique(d$case)) {
  tr <- d[d$case == case & d$split == "train", ]
  te <- d[d$case == case & d$split == "test", ]
  tr <- tr[order(tr$row), ]; te <- te[order(te$row), ]
  id <- factor(tr$cluster); id_te <- factor(te$cluster, levels = levels(id))
  covmat <- as.matrix(tr[, c("X1", "X2", "X3", "X4", "X5")])
  x <- as.matrix(tr[, c("X3", "X4", "X5")]); x_te <- as.matrix(te[, c("X3", "X4", "X5")])
  D <- model.matrix(~ id)[, -1, drop = FALSE]; D_te <- model.matrix(~ id_te)[, -1, drop = FALSE]
  for (m in names(methods)) {
    s <- methods[[m]]
    pi <- if (s$prop == "overall") rep(mean(tr$treatment), nrow(tr)) else
      ave(tr$treatment, id)
    w <- ifelse(tr$treatment == 1, 1 / pi, 1 / (1 - pi))
    off <- switch(s$aug, none = rep(0, nrow(tr)),
                  l = fitted(lm(tr$outcome ~ covmat)),
                  s = fitted(lm(tr$outcome ~ covmat + id)))
    xm <- if (s$site) cbind(x, D) else x
    xm_te <- if (s$site) cbind(x_te, D_te) else x_te
    pf <- if (s$site) c(0, 0, 0, 0, rep(1, ncol(D))) else c(0, 1, 1, 1)
    xt <- (2 * tr$treatment - 1) * cbind(1, xm)
    cv <- cv.glmnet(xt, tr$outcome, weights = w, offset = off, family = "gaussian",
                    intercept = FALSE, penalty.factor = pf, foldid = tr$foldid)
    b <- as.numeric(coef(cv, s = "lambda.min"))[-1]
    score <- drop(cbind(1, xm_te) %*% b)
    out[[paste(case, m)]] <- list(case = case, method = m, lambda = cv$lambda, cvm = cv$cvm,
                                  lambda_min = cv$lambda.min, coef_min = b,
                                  decisions = paste(as.integer(score > 0), collapse = ""),
                                  score_head = head(score, 20))
  }
}
meta <- list(R = R.version.string, glmnet = as.character(packageVersion("glmnet")))
write_json(list(meta = meta, fits = unname(out)), file.path(here, "glmnet_cv_reference.json"),
           digits = NA, auto_unbox = TRUE)
cat("wrote", length(out), "fits\n")
